{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "comfykube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; leaves room for the "-operator"/"-bot" suffixes. */}}
{{- define "comfykube.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "comfykube.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; include with (dict "ctx" $ "component" "operator"). */}}
{{- define "comfykube.labels" -}}
helm.sh/chart: {{ include "comfykube.chart" .ctx }}
{{ include "comfykube.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: comfykube
{{- end }}

{{- define "comfykube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "comfykube.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "comfykube.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "comfykube.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "comfykube.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "comfykube.bot.serviceAccountName" -}}
{{- if .Values.bot.serviceAccount.create }}
{{- default (printf "%s-bot" (include "comfykube.fullname" .)) .Values.bot.serviceAccount.name }}
{{- else }}
{{- required "bot.serviceAccount.name is required when bot.serviceAccount.create is false" .Values.bot.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the operator watches when not watching all of them, as a JSON list. */}}
{{- define "comfykube.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- .Values.watch.namespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* Namespace the bot creates ImageJobs in; it must be watched by the operator. */}}
{{- define "comfykube.botNamespace" -}}
{{- if .Values.bot.namespace }}
{{- .Values.bot.namespace }}
{{- else if .Values.watch.allNamespaces }}
{{- .Release.Namespace }}
{{- else }}
{{- first (include "comfykube.watchNamespaces" . | fromJsonArray) }}
{{- end }}
{{- end }}

{{- define "comfykube.discoveryNamespace" -}}
{{- if .Values.comfyui.enabled }}
{{- .Release.Namespace }}
{{- else }}
{{- default .Release.Namespace .Values.comfyui.discovery.namespace }}
{{- end }}
{{- end }}

{{/* Backend discovery is on when asked for, and always for the chart's own ComfyUI (its replicas). */}}
{{- define "comfykube.discoveryEnabled" -}}
{{- if or .Values.comfyui.enabled .Values.comfyui.discovery.enabled }}true{{ end }}
{{- end }}

{{- define "comfykube.discoveryService" -}}
{{- if .Values.comfyui.enabled }}
{{- include "comfykube.fullname" . }}-comfyui
{{- else }}
{{- .Values.comfyui.discovery.service }}
{{- end }}
{{- end }}

{{/* The ComfyUI URL the operator and bot use: the chart's own ComfyUI Service when enabled. */}}
{{- define "comfykube.comfyuiUrl" -}}
{{- if .Values.comfyui.enabled }}
{{- printf "http://%s-comfyui.%s.svc.cluster.local:%d" (include "comfykube.fullname" .) .Release.Namespace (int .Values.comfyui.port) }}
{{- else }}
{{- .Values.comfyui.url }}
{{- end }}
{{- end }}

{{/* host:port of S3: the chart's own MinIO Service when enabled. */}}
{{- define "comfykube.minioEndpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s-minio.%s.svc.cluster.local:9000" (include "comfykube.fullname" .) .Release.Namespace }}
{{- else }}
{{- .Values.minio.endpoint }}
{{- end }}
{{- end }}

{{/* Whether the metrics Service is rendered (asked for directly or implied by the ServiceMonitor). */}}
{{- define "comfykube.metricsService" -}}
{{- if and (gt (int .Values.operator.metricsPort) 0) (or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled) }}true{{ end }}
{{- end }}

{{/* Whether the bot's metrics Service is rendered: the bot is on, serves /metrics, and metrics are asked for. */}}
{{- define "comfykube.botMetricsService" -}}
{{- if and .Values.bot.enabled (gt (int .Values.bot.metricsPort) 0) (or .Values.metrics.service.enabled .Values.metrics.serviceMonitor.enabled) }}true{{ end }}
{{- end }}

{{/*
MinIO/S3 settings shared by the operator (uploads, presigning) and the bot (reads the stored
images, mints fresh links). The credentials are only ever secretKeyRefs to minio.existingSecret.
*/}}
{{- define "comfykube.storageEnv" -}}
- name: MINIO_ENDPOINT
  value: {{ include "comfykube.minioEndpoint" . | quote }}
{{- with .Values.minio.publicEndpoint }}
- name: MINIO_PUBLIC_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: MINIO_BUCKET
  value: {{ .Values.minio.bucket | quote }}
- name: MINIO_SECURE
  value: {{ and .Values.minio.secure (not .Values.minio.enabled) | toString | quote }}
{{- with .Values.minio.region }}
- name: MINIO_REGION
  value: {{ . | quote }}
{{- end }}
- name: MINIO_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.minio.existingSecret | quote }}
      key: {{ .Values.minio.accessKeyKey | quote }}
- name: MINIO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.minio.existingSecret | quote }}
      key: {{ .Values.minio.secretKeyKey | quote }}
{{- end }}

{{/* Checks across values that the JSON schema cannot express. */}}
{{- define "comfykube.validate" -}}
{{- if and (not .Values.watch.allNamespaces) .Values.bot.enabled }}
{{- $watched := include "comfykube.watchNamespaces" . | fromJsonArray }}
{{- $botns := include "comfykube.botNamespace" . }}
{{- if not (has $botns $watched) }}
{{- fail (printf "bot.namespace %q is not watched by the operator (watch.namespaces: %s): its ImageJobs would never run; add it to watch.namespaces or set watch.allNamespaces=true" $botns (join ", " $watched)) }}
{{- end }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (eq (int .Values.operator.metricsPort) 0) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics: set operator.metricsPort to a port (it is 0, which disables /metrics)" }}
{{- end }}
{{- if and .Values.metrics.service.enabled (eq (int .Values.operator.metricsPort) 0) }}
{{- fail "metrics.service.enabled needs metrics: set operator.metricsPort to a port (it is 0, which disables /metrics)" }}
{{- end }}
{{- if eq (int .Values.operator.healthPort) (int .Values.operator.metricsPort) }}
{{- fail "operator.healthPort and operator.metricsPort must differ" }}
{{- end }}
{{- if and .Values.bot.enabled (eq (int .Values.bot.healthPort) (int .Values.bot.metricsPort)) }}
{{- fail "bot.healthPort and bot.metricsPort must differ" }}
{{- end }}
{{- if and .Values.comfyui.enabled (not .Values.comfyui.image.repository) }}
{{- fail "comfyui.image.repository is required when comfyui.enabled is true: there is no official ComfyUI image, choose one (see docs/helm.md, \"ComfyUI from this chart\")" }}
{{- end }}
{{- if and .Values.comfyui.discovery.enabled (not .Values.comfyui.enabled) (not .Values.comfyui.discovery.service) }}
{{- fail "comfyui.discovery.service is required when comfyui.discovery.enabled is true" }}
{{- end }}
{{- end }}

{{- define "comfykube.comfyuiImage" -}}
{{- $img := .Values.comfyui.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default "latest" $img.tag) }}
{{- end }}
{{- end }}
