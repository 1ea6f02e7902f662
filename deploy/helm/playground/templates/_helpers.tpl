{{/* Chart name, truncated to keep derived names within 63 characters. */}}
{{- define "playground.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name. Kept to 40 characters: the nodes' pod names (<fullname>-node-<i>) are their
node ids (at most 64 characters) and their DNS labels (at most 63).
*/}}
{{- define "playground.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "playground.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "playground.selectorLabels" -}}
app.kubernetes.io/name: {{ include "playground.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "playground.labels" -}}
helm.sh/chart: {{ include "playground.chart" . }}
{{ include "playground.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: playground
{{- end }}

{{/* Names of the node StatefulSet (= its headless Service) and of the gateways. */}}
{{- define "playground.nodeName" -}}
{{- printf "%s-node" (include "playground.fullname" .) }}
{{- end }}

{{- define "playground.gatewayName" -}}
{{- printf "%s-gateway" (include "playground.fullname" .) }}
{{- end }}

{{- define "playground.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "playground.fullname" .) }}
{{- end }}
{{- end }}

{{- define "playground.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "playground.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
A node pod's stable host name under the headless Service, for ordinal (or "$(VAR)" text) .i: the host
form of the seeds and of PLAYGROUND_ADVERTISE. Called with (dict "root" $ "i" ...).
*/}}
{{- define "playground.nodeHost" -}}
{{- $node := include "playground.nodeName" .root }}
{{- printf "%s.%s.%s.svc.%s" (toString .i) $node .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/*
The seed list (PLAYGROUND_SEEDS): one "id@host:port" for each of the first node.seedCount pods, id = pod
name = node.id, host = the pod's stable name under the headless Service. It does not follow
node.replicas: a pod added to the list would start empty as a seed and bootstrap groups of its own
instead of joining.
*/}}
{{- define "playground.seeds" -}}
{{- $node := include "playground.nodeName" . }}
{{- $count := int .Values.node.seedCount }}
{{- if lt $count 1 }}
{{- fail "node.seedCount must be at least 1" }}
{{- end }}
{{- if gt $count (int .Values.node.replicas) }}
{{- fail (printf "node.replicas (%d) must be at least node.seedCount (%d): the seeds are the first pods" (int .Values.node.replicas) $count) }}
{{- end }}
{{- $seeds := list }}
{{- range $i := until $count }}
{{- $pod := printf "%s-%d" $node $i }}
{{- $seeds = append $seeds (printf "%s@%s:%d" $pod (include "playground.nodeHost" (dict "root" $ "i" $pod)) (int $.Values.cluster.transportPort)) }}
{{- end }}
{{- join "," $seeds }}
{{- end }}

{{/* Environment every member shares: seeds, secrets, logging. */}}
{{- define "playground.commonEnv" -}}
- name: PLAYGROUND_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: PLAYGROUND_SEEDS
  valueFrom:
    configMapKeyRef:
      name: {{ include "playground.fullname" . }}-config
      key: seeds
- name: PLAYGROUND_CLUSTER_LISTEN
  value: "0.0.0.0:{{ .Values.cluster.transportPort }}"
- name: PLAYGROUND_TOKEN_KEY_FILE
  value: /etc/playground/secrets/token.key
- name: PLAYGROUND_COOKIE
  valueFrom:
    secretKeyRef:
      name: {{ include "playground.secretName" . }}
      key: cookie
- name: PLAYGROUND_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "playground.secretName" . }}
      key: admin-token
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/* Volumes every member shares: /tmp, the configuration file, the token key. */}}
{{- define "playground.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
- name: config
  configMap:
    name: {{ include "playground.fullname" . }}-config
    items:
      - key: playground.toml
        path: playground.toml
- name: secrets
  secret:
    secretName: {{ include "playground.secretName" . }}
    defaultMode: 0440
    items:
      - key: token-key
        path: token.key
{{- end }}

{{- define "playground.commonMounts" -}}
- name: tmp
  mountPath: /tmp
- name: config
  mountPath: /etc/playground/config
  readOnly: true
- name: secrets
  mountPath: /etc/playground/secrets
  readOnly: true
{{- end }}
