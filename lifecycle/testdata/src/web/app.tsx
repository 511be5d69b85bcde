import { useFlag, useBooleanFlagValue, useStringFlagDetails } from '@openfeature/react-sdk';
export function Banner() {
  const show = useBooleanFlagValue('new-banner', false);
  const { value } = useFlag("dark-mode", false);
  const d = useStringFlagDetails<string>(`theme`, 'light');
  const n = await client.getNumberValue('max-items', 10);
  return fetch(`/ofrep/v1/evaluate/flags/ghost-flag`, { method: 'POST' });
}
