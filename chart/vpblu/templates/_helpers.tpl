{{/* Labels every object carries: $component is controller or daemon. */}}
{{- define "vpblu.labels" -}}
app.kubernetes.io/name: vpblu-{{ .component }}
app.kubernetes.io/part-of: vpblu
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{/*
Selector labels: fixed forever, as a Deployment's or DaemonSet's selector
cannot change. The controller finds daemon pods by app.kubernetes.io/name.
*/}}
{{- define "vpblu.selector" -}}
app.kubernetes.io/name: vpblu-{{ .component }}
{{- end }}

{{/* image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "vpblu.image" -}}
{{- printf "%s:%s" .repository (default $.appVersion .tag) -}}
{{- end }}

{{/* The name daemons check on the controller's certificate. */}}
{{- define "vpblu.serverName" -}}
vpblu-controller.{{ .Release.Namespace }}.svc
{{- end }}

{{/* The port of an address:port or [v6]:port. */}}
{{- define "vpblu.portOf" -}}
{{- splitList ":" . | last -}}
{{- end }}

{{/* Prometheus scrape annotations for a pod serving /metrics on $port. */}}
{{- define "vpblu.scrapeAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}
