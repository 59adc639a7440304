{{/* Names and labels. */}}
{{- define "lark-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lark-bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lark-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lark-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lark-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lark-bridge.labels" -}}
helm.sh/chart: {{ include "lark-bridge.chart" . }}
{{ include "lark-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "lark-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lark-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "lark-bridge.secretName" -}}
{{- .Values.existingSecret | default (printf "%s-secrets" (include "lark-bridge.fullname" .)) }}
{{- end }}

{{/*
Secret items: the key in the Secret (and the file name under /etc/lark-bridge/secrets/), the
value in .Values.secrets, and the config key (a path) that points at the file. The NATS
credentials also go to the NATS KV dedup store (dedupNats) when dedup.backend is "nats".
*/}}
{{- define "lark-bridge.secretTable" -}}
encrypt_key: {value: encryptKey, config: [lark, encrypt_key_file]}
verification_token: {value: verificationToken, config: [lark, verification_token_file]}
app_secret: {value: appSecret, config: [lark, app_secret_file]}
helpdesk_token: {value: helpdeskToken, config: [lark, helpdesk_token_file]}
redis_password: {value: redisPassword, config: [dedup, redis, password_file]}
nats_password: {value: natsPassword, config: [sink, nats, password_file], dedupNats: [dedup, nats, password_file]}
nats_token: {value: natsToken, config: [sink, nats, token_file], dedupNats: [dedup, nats, token_file]}
nats_creds: {value: natsCreds, config: [sink, nats, creds_file], dedupNats: [dedup, nats, creds_file]}
kafka_properties: {value: kafkaProperties, config: [sink, kafka, properties_file]}
{{- end }}

{{- define "lark-bridge.secretDir" -}}/etc/lark-bridge/secrets{{- end }}

{{/*
The Secret keys in use, as a JSON list: the existing Secret's declared keys, or the non-empty
values of .Values.secrets. With no Lark credential at all (and verification not switched off)
`encrypt_key` is still listed, with an empty value, so the pod fails at start with the
bridge's own error about an empty key rather than running unverified.
*/}}
{{- define "lark-bridge.secretKeys" -}}
{{- $table := include "lark-bridge.secretTable" . | fromYaml }}
{{- $keys := list }}
{{- if .Values.existingSecret }}
{{- $keys = .Values.existingSecretKeys }}
{{- else }}
{{- range $key, $item := $table }}
{{- if index $.Values.secrets $item.value }}
{{- $keys = append $keys $key }}
{{- end }}
{{- end }}
{{- $unverified := and .Values.config.lark (index .Values.config.lark "allow_unverified") }}
{{- /* Long-connection mode authenticates with the App Secret: no Encrypt Key needed. */}}
{{- $longconn := and .Values.config.source (eq (toString (index .Values.config.source "kind")) "long_connection") }}
{{- if and (not (has "encrypt_key" $keys)) (not $longconn) (not (has "verification_token" $keys)) (not $unverified) }}
{{- $keys = append $keys "encrypt_key" }}
{{- end }}
{{- end }}
{{- $keys | uniq | sortAlpha | toJson }}
{{- end }}

{{/* True (non-empty) when no Lark credential was given: NOTES warns about it. */}}
{{- define "lark-bridge.missingLarkSecret" -}}
{{- $unverified := and .Values.config.lark (index .Values.config.lark "allow_unverified") }}
{{- $longconn := and .Values.config.source (eq (toString (index .Values.config.source "kind")) "long_connection") }}
{{- if and (not $longconn) (not .Values.existingSecret) (not .Values.secrets.encryptKey) (not .Values.secrets.verificationToken) (not $unverified) -}}
true
{{- end }}
{{- end }}

{{/*
The effective configuration: .Values.config, plus the listen addresses of the container ports,
plus a `*_file` key for every mounted secret.
*/}}
{{- define "lark-bridge.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := mustMergeOverwrite $cfg (dict
      "server" (dict "listen" "0.0.0.0:8080")
      "admin" (dict "listen" "0.0.0.0:9090")) }}
{{- $table := include "lark-bridge.secretTable" . | fromYaml }}
{{- $dir := include "lark-bridge.secretDir" . }}
{{- $natsDedup := eq (toString (($cfg.dedup | default dict).backend)) "nats" }}
{{- range $key := include "lark-bridge.secretKeys" . | fromJsonArray }}
{{- $item := index $table $key }}
{{- $paths := list $item.config }}
{{- if and $natsDedup $item.dedupNats }}
{{- $paths = append $paths $item.dedupNats }}
{{- end }}
{{- range $path := $paths }}
{{- $leaf := dict (last $path) (printf "%s/%s" $dir $key) }}
{{- range $part := reverse (initial $path) }}
{{- $leaf = dict $part $leaf }}
{{- end }}
{{- $_ := mustMergeOverwrite $cfg $leaf }}
{{- end }}
{{- end }}
{{- with .Values.redisTls }}
{{- if .secretName }}
{{- $tls := dict }}
{{- range $k, $v := dict "tls_ca_file" .caKey "tls_cert_file" .certKey "tls_key_file" .keyKey }}
{{- if $v }}
{{- $_ := set $tls $k (printf "%s/%s" (include "lark-bridge.redisTlsDir" $) $v) }}
{{- end }}
{{- end }}
{{- $_ := mustMergeOverwrite $cfg (dict "dedup" (dict "redis" $tls)) }}
{{- end }}
{{- end }}
{{- $cfg | toJson }}
{{- end }}

{{- define "lark-bridge.redisTlsDir" -}}/etc/lark-bridge/redis-tls{{- end }}

{{/*
A minimal TOML writer (Helm's toToml prints YAML integers as floats, e.g. 1e+06, which the
bridge rejects). Input: dict "path" <dotted table name or ""> "table" <map>. Scalars and
arrays of scalars first, then sub-tables, keys sorted; null values are left out.
*/}}
{{- define "lark-bridge.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{- define "lark-bridge.toml.value" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq . (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}{{ . }}
{{- else if kindIs "slice" . }}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ include "lark-bridge.toml.value" $v }}{{ end }}]
{{- else }}{{ fail (printf "config: cannot write %s value %v as TOML" (kindOf .) .) }}
{{- end }}
{{- end }}

{{- define "lark-bridge.toml.table" -}}
{{- $path := .path }}
{{- $table := .table }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if and (not (kindIs "map" $v)) (not (kindIs "invalid" $v)) }}
{{ include "lark-bridge.toml.key" $k }} = {{ include "lark-bridge.toml.value" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if kindIs "map" $v }}
{{- $sub := include "lark-bridge.toml.key" $k }}
{{- if $path }}{{ $sub = printf "%s.%s" $path $sub }}{{ end }}

[{{ $sub }}]
{{- include "lark-bridge.toml.table" (dict "path" $sub "table" $v) }}
{{- end }}
{{- end }}
{{- end }}

{{/* Render-time checks that a schema cannot express. */}}
{{- define "lark-bridge.validate" -}}
{{- $cfg := include "lark-bridge.config" . | fromJson }}
{{- $dedup := $cfg.dedup | default dict }}
{{- if and (eq (toString ($dedup.backend | default "memory")) "memory") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "config.dedup.backend \"memory\" is per pod: with more than one replica (or autoscaling) an event redelivered to another pod is published twice. Use \"redis\" or \"nats\", or set replicaCount: 1." }}
{{- end }}
{{- $grace := int (($cfg.server | default dict).shutdown_grace_secs | default 20) }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $grace (int .Values.preStopSleepSeconds)) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + config.server.shutdown_grace_secs (%d)" (int .Values.terminationGracePeriodSeconds) (add $grace (int .Values.preStopSleepSeconds))) }}
{{- end }}
{{- end }}
{{- if and .Values.existingSecret (not .Values.existingSecretKeys) }}
{{- fail "existingSecret is set but existingSecretKeys is empty: list the keys the Secret holds" }}
{{- end }}
{{- end }}

{{- define "lark-bridge.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- $cfg := include "lark-bridge.config" . | fromJson }}
{{- add (int (($cfg.server | default dict).shutdown_grace_secs | default 20)) (int .Values.preStopSleepSeconds) 5 }}
{{- end }}
{{- end }}

{{- define "lark-bridge.webhookPath" -}}
{{- $cfg := include "lark-bridge.config" . | fromJson }}
{{- ($cfg.server | default dict).path | default "/webhook/event" }}
{{- end }}
