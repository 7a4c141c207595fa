{{/* The web gallery's helpers (kept apart from _helpers.tpl). */}}

{{- define "comfykube.web.serviceAccountName" -}}
{{- if .Values.web.serviceAccount.create }}
{{- default (printf "%s-web" (include "comfykube.fullname" .)) .Values.web.serviceAccount.name }}
{{- else }}
{{- required "web.serviceAccount.name is required when web.serviceAccount.create is false" .Values.web.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Namespaces the gallery shows, as a JSON list: web.namespaces, else the operator's. */}}
{{- define "comfykube.web.namespaces" -}}
{{- if .Values.web.namespaces }}
{{- .Values.web.namespaces | uniq | toJson }}
{{- else }}
{{- include "comfykube.watchNamespaces" . }}
{{- end }}
{{- end }}

{{/* All namespaces: only when the operator watches all and web.namespaces does not narrow it. */}}
{{- define "comfykube.web.allNamespaces" -}}
{{- if and .Values.watch.allNamespaces (not .Values.web.namespaces) }}true{{ end }}
{{- end }}

{{/* Checks across values the JSON schema cannot express. */}}
{{- define "comfykube.web.validate" -}}
{{- if eq .Values.web.auth "none" }}
{{- if .Values.web.ingress.enabled }}
{{- fail "web.ingress.enabled needs authentication: web.auth=none binds the gallery to 127.0.0.1 (kubectl port-forward only); choose token, basic or proxy" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.web.auth "proxy") (not .Values.web.proxy.from) }}
{{- fail "web.auth=proxy trusts a header, so the gallery port must be reachable from the proxy only: set web.proxy.from to the proxy pods (NetworkPolicyPeer list)" }}
{{- end }}
{{- if eq (int .Values.web.port) (int .Values.web.healthPort) }}
{{- fail "web.port and web.healthPort must differ" }}
{{- end }}
{{- end }}
