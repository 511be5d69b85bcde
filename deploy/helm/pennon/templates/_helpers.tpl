{{/* Common labels. */}}
{{- define "pennon.labels" -}}
app.kubernetes.io/part-of: pennon
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* The NATS client URL: given, or this release's NATS service. */}}
{{- define "pennon.natsURL" -}}
{{- if .Values.nats.url -}}
{{ .Values.nats.url }}
{{- else -}}
nats://{{ .Release.Name }}-nats.{{ .Release.Namespace }}:4222
{{- end -}}
{{- end -}}

{{- define "pennon.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Hardened container security context shared by every container. */}}
{{- define "pennon.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
