{{/* Names and labels shared by every template (the webhook's templates use them too). */}}

{{- define "kaito.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{/* The operator's objects: <release>-kaito, or the release name when it already says kaito. */}}
{{- define "kaito.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/*
The full name with a suffix, e.g. <fullname>-webhook: include with (dict "context" $ "suffix" "webhook").
The full name is cut first so that the whole name, suffix included, stays within 63 characters (a
Service name is a DNS label; Helm allows 53-character release names).
*/}}
{{- define "kaito.suffixedName" -}}
{{- $room := sub 62 (len .suffix) | int -}}
{{- printf "%s-%s" (include "kaito.fullname" .context | trunc $room | trimSuffix "-") .suffix -}}
{{- end -}}

{{- define "kaito.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "kaito.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (dict "context" $ "component" "operator"). */}}
{{- define "kaito.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaito.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kaito.componentLabels" -}}
{{ include "kaito.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "kaito.serviceAccountName" -}}
{{- .Values.serviceAccount.name -}}
{{- end -}}

{{- define "kaito.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}
