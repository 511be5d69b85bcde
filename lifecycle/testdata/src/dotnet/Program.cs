var enabled = await client.GetBooleanValueAsync("new-banner", false);
