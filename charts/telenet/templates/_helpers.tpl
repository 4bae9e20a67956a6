{{/*
Shared helpers. Every workload is one of the services in
"telenet.serviceNames"; their settings are `.Values.defaults` deep-merged
with `.Values.services.<name>` (see "telenet.component").
*/}}

{{/* The services, in a fixed order so rendering is stable. */}}
{{- define "telenet.serviceNames" -}}
ingress contacts conversations media dispatch reporting gateway
{{- end -}}

{{/*
What each service needs: its own PostgreSQL schema, the event bus (outbox
relay and consumers), the Redis of the presence store and an HTTP listener.
The gateway keeps presence and has no database; it publishes no events but
listens for token revocations (`member.token_revoked`, a queue of its own
per replica), so it gets the broker too. Ingress (webhooks per channel) and
dispatch (each provider's sending limits) count rate limits in that Redis,
so every replica shares them (`rate_limit_url` defaults to `presence_url`).
Which services it calls is in "telenet.calls".
*/}}
{{- define "telenet.needs" -}}
{{- $needs := dict
  "ingress" (dict "database" true "bus" true "presence" true "httpPort" 8081 "httpPortName" "webhooks")
  "contacts" (dict "database" true "bus" true "presence" false)
  "conversations" (dict "database" true "bus" true "presence" false)
  "media" (dict "database" true "bus" true "presence" false)
  "dispatch" (dict "database" true "bus" true "presence" true)
  "reporting" (dict "database" true "bus" true "presence" false)
  "gateway" (dict "database" false "bus" true "presence" true "httpPort" 8080 "httpPortName" "http")
-}}
{{- toYaml (get $needs .) -}}
{{- end -}}

{{/*
Which service calls which, as YAML: service -> {grpc: [services], http:
[services]}, the services whose gRPC or HTTP port it connects to. Read from
files/calls.yaml, which deploy/tools/callgraph.py generates from each
service's declared calls (the services refuse any call they do not
declare), so the NetworkPolicies follow the code: (root context).
*/}}
{{- define "telenet.calls" -}}
{{- $graph := .Files.Get "files/calls.yaml" | fromYaml -}}
{{- if or (not $graph) (hasKey $graph "Error") -}}
{{- fail "files/calls.yaml is missing or unreadable: run python3 deploy/tools/callgraph.py --write" -}}
{{- end -}}
{{- $names := splitList " " (include "telenet.serviceNames" .) -}}
{{- range $name := $names -}}
{{- $calls := get $graph $name -}}
{{- if not (kindIs "map" $calls) -}}
{{- fail (printf "files/calls.yaml: no entry for %s: run python3 deploy/tools/callgraph.py --write" $name) -}}
{{- end -}}
{{- range $kind := list "grpc" "http" -}}
{{- range $callee := (get $calls $kind | default (list)) -}}
{{- if not (has $callee $names) -}}
{{- fail (printf "files/calls.yaml: %s calls %s, which is no service" $name $callee) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $graph -}}
{{- end -}}

{{- define "telenet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name: the release name, followed by the chart
name unless the release name already contains it ("telenet" stays
"telenet", "prod" becomes "prod-telenet").
*/}}
{{- define "telenet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one service's resources: (dict "root" $ "name" "gateway"). */}}
{{- define "telenet.componentName" -}}
{{- printf "%s-%s" (include "telenet.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "telenet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource: (dict "root" $ "component" "gateway"). */}}
{{- define "telenet.labels" -}}
helm.sh/chart: {{ include "telenet.chart" .root }}
{{ include "telenet.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: telenet
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels a Service or PDB selects pods by. */}}
{{- define "telenet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "telenet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/*
`annotations:` of a top-level resource's metadata (commonAnnotations plus
extra ones), indented for `metadata`; nothing when there are none:
(dict "root" $ "extra" map).
*/}}
{{- define "telenet.annotations" -}}
{{- $all := merge (deepCopy (default (dict) .extra)) (deepCopy (default (dict) .root.Values.commonAnnotations)) -}}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end -}}

{{/*
Deep merge where every value of `over` wins, including false, 0 and "".
(Sprig's mergeOverwrite keeps the base value when the override is empty,
so `enabled: false` over a default `true` would be lost.) Lists are
replaced, not concatenated. Returns YAML: (dict "base" map "over" map).
*/}}
{{- define "telenet.deepMerge" -}}
{{- $out := deepCopy (default (dict) .base) -}}
{{- range $key, $value := (default (dict) .over) -}}
{{- $current := get $out $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $out $key (include "telenet.deepMerge" (dict "base" $current "over" $value) | fromYaml) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
One service's effective settings: `.Values.defaults` with
`.Values.services.<name>` merged over it, plus its needs. YAML:
(dict "root" $ "name" "gateway").
*/}}
{{- define "telenet.component" -}}
{{- $over := get .root.Values.services .name | default (dict) -}}
{{- $merged := include "telenet.deepMerge" (dict "base" .root.Values.defaults "over" $over) | fromYaml -}}
{{- $image := include "telenet.deepMerge" (dict "base" .root.Values.image "over" (default (dict) $merged.image)) | fromYaml -}}
{{- $_ := set $merged "image" $image -}}
{{- $_ := set $merged "needs" (include "telenet.needs" .name | fromYaml) -}}
{{- $_ := set $merged "name" .name -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* registry/repository:tag or @digest: (dict "root" $ "image" map). */}}
{{- define "telenet.image" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}
{{- $repo = printf "%s/%s" .image.registry .image.repository -}}
{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "telenet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "telenet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret the chart creates for URLs given inline. */}}
{{- define "telenet.datastoresSecretName" -}}
{{- printf "%s-datastores" (include "telenet.fullname" .) -}}
{{- end -}}

{{/*
Whether the chart must create its datastores Secret: some URL is given
inline (not through an existing Secret).
*/}}
{{- define "telenet.createDatastoresSecret" -}}
{{- if or (and (not .Values.database.existingSecret) .Values.database.url) (and (not .Values.rabbitmq.existingSecret) .Values.rabbitmq.url) (and (not .Values.redis.existingSecret) .Values.redis.url) -}}
true
{{- end -}}
{{- end -}}

{{/*
An env entry reading one datastore URL from its Secret: the existing
Secret when one is named, else the chart's datastores Secret (whose keys
are the default key names). A missing URL is reported here, so
`helm install` fails naming the value to set:
(dict "root" $ "env" "TELENET_DATABASE_URL" "what" "database" "key" "database-url").
*/}}
{{- define "telenet.urlEnv" -}}
{{- $store := get .root.Values .what -}}
{{- if and (not $store.existingSecret) (not $store.url) -}}
{{- fail (printf "%s: set %s.url or %s.existingSecret" .what .what .what) -}}
{{- end -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ default (include "telenet.datastoresSecretName" .root) $store.existingSecret }}
      key: {{ ternary $store.existingSecretKey .key (not (empty $store.existingSecret)) }}
{{- end -}}

{{/*
The public base URL of the webhook listener (channel webhook URLs are
`{publicUrl}/webhooks/{channel_id}`): `webhooks.publicUrl`, else derived
from the webhooks Ingress or HTTPRoute host.
*/}}
{{- define "telenet.webhooksPublicUrl" -}}
{{- if .Values.webhooks.publicUrl -}}
{{- .Values.webhooks.publicUrl | trimSuffix "/" -}}
{{- else if and .Values.ingress.enabled .Values.ingress.webhooks.host -}}
{{- printf "%s://%s" (ternary "https" "http" (not (empty .Values.ingress.webhooks.tlsSecretName))) .Values.ingress.webhooks.host -}}
{{- else if and .Values.httpRoute.enabled .Values.httpRoute.webhooks.hostname -}}
{{- printf "https://%s" .Values.httpRoute.webhooks.hostname -}}
{{- else if .Values.services.ingress.enabled -}}
{{- fail "webhooks.publicUrl: set the public base URL channels reach the webhooks at (or ingress.webhooks.host / httpRoute.webhooks.hostname)" -}}
{{- end -}}
{{- end -}}

{{/* gRPC endpoint of a service inside the cluster: (dict "root" $ "name" "contacts"). */}}
{{- define "telenet.endpoint" -}}
{{- $override := get .root.Values.endpoints .name -}}
{{- if $override -}}
{{- $override -}}
{{- else -}}
{{- printf "%s://%s:%d" (ternary "https" "http" .root.Values.grpcTls.enabled) (include "telenet.componentName" .) 50051 -}}
{{- end -}}
{{- end -}}

{{/*
The Secret holding one service's gRPC certificate, key and CA (`tls.crt`,
`tls.key`, `ca.crt`): (dict "root" $ "name" "gateway").
*/}}
{{- define "telenet.grpcTlsSecret" -}}
{{- $existing := get .root.Values.grpcTls.existingSecrets .name -}}
{{- if and (eq .root.Values.grpcTls.source "existing") $existing -}}
{{- $existing -}}
{{- else -}}
{{- printf "%s-grpc-tls" (include "telenet.componentName" .) -}}
{{- end -}}
{{- end -}}

{{/*
The names one service's certificate carries, as a YAML list: its identity
(`<service>.telenet.internal`, how the others know it as a caller), then
the names callers reach it at (its Service, and loopback for commands run
in its pod): (dict "root" $ "name" "gateway").
*/}}
{{- define "telenet.grpcDnsNames" -}}
{{- $component := include "telenet.componentName" . -}}
{{- $ns := .root.Release.Namespace -}}
{{- toYaml (list (printf "%s.telenet.internal" .name) $component (printf "%s.%s" $component $ns) (printf "%s.%s.svc" $component $ns) (printf "%s.%s.svc.%s" $component $ns .root.Values.grpcTls.clusterDomain) "localhost") -}}
{{- end -}}

{{/* The Secret with the platform clients file, if there are platform clients. */}}
{{- define "telenet.platformClientsSecret" -}}
{{- if .Values.platformClients.existingSecret -}}
{{- .Values.platformClients.existingSecret -}}
{{- else if .Values.platformClients.clients -}}
{{- printf "%s-grpc-clients" (include "telenet.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Flattens `settings` into TELENET_ environment variables the way the
binary reads them: `dispatch.concurrency` becomes
TELENET_DISPATCH__CONCURRENCY. Helm reads every number in values as a
float; whole numbers are written without a fraction or exponent
(104857600, not 1.048576e+08). Lines of a ConfigMap's `data`, each
starting with a newline and indented by two:
(dict "prefix" "TELENET_" "values" map).
*/}}
{{- define "telenet.flattenEnv" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .values -}}
{{- $name := printf "%s%s" $prefix (upper $key) -}}
{{- if kindIs "map" $value -}}
{{- include "telenet.flattenEnv" (dict "prefix" (printf "%s__" $name) "values" $value) -}}
{{- else if kindIs "slice" $value }}
  {{ $name }}: {{ printf "[%s]" (join ", " $value) | quote }}
{{- else if and (kindIs "float64" $value) (eq $value (floor $value)) }}
  {{ $name }}: {{ int64 $value | toString | quote }}
{{- else }}
  {{ $name }}: {{ toString $value | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A probe without its `enabled` switch and with its handler: the one given
in values, else the default handler passed in (dict "probe" map "default" map).
*/}}
{{- define "telenet.probe" -}}
{{- $probe := omit .probe "enabled" -}}
{{- if not (or $probe.grpc $probe.httpGet $probe.tcpSocket $probe.exec) -}}
{{- $probe = merge $probe .default -}}
{{- end -}}
{{- toYaml $probe -}}
{{- end -}}

{{/* A number (written as an integer) or a percentage string. */}}
{{- define "telenet.intOrString" -}}
{{- if kindIs "string" . -}}
{{- quote . -}}
{{- else -}}
{{- int64 . -}}
{{- end -}}
{{- end -}}

{{/* Egress rule for DNS lookups. */}}
{{- define "telenet.dnsEgress" -}}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with .Values.networkPolicy.dnsTo }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
TLS to a datastore (docs/security.md, "TLS to PostgreSQL, RabbitMQ and
Redis"): the files of `<what>.tls.existingSecret` mounted at
/etc/telenet/<dir> and named by `<key>.*`. Called with
(dict "root" $ "what" "database" "key" "database_tls" "dir" "database-tls").
*/}}
{{- define "telenet.storeTls" -}}
{{- $tls := (get .root.Values .what).tls -}}
{{- if and $tls.existingSecret (or $tls.caKey $tls.certKey) -}}
{{- if ne (empty $tls.certKey) (empty $tls.keyKey) -}}
{{- fail (printf "%s.tls: set certKey and keyKey together" .what) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "telenet.storeTlsEnv" -}}
{{- if include "telenet.storeTls" . -}}
{{- $tls := (get .root.Values .what).tls -}}
{{- $prefix := printf "TELENET_%s__" (upper .key) -}}
{{- if $tls.caKey }}
- name: {{ $prefix }}CA_FILE
  value: /etc/telenet/{{ .dir }}/ca.crt
{{- end }}
{{- if $tls.certKey }}
- name: {{ $prefix }}CERT_FILE
  value: /etc/telenet/{{ .dir }}/tls.crt
- name: {{ $prefix }}KEY_FILE
  value: /etc/telenet/{{ .dir }}/tls.key
{{- end }}
{{- end -}}
{{- end -}}

{{- define "telenet.storeTlsMount" -}}
{{- if include "telenet.storeTls" . }}
- name: {{ .dir }}
  mountPath: /etc/telenet/{{ .dir }}
  readOnly: true
{{- end -}}
{{- end -}}

{{- define "telenet.storeTlsVolume" -}}
{{- if include "telenet.storeTls" . -}}
{{- $tls := (get .root.Values .what).tls }}
- name: {{ .dir }}
  secret:
    secretName: {{ $tls.existingSecret }}
    items:
      {{- if $tls.caKey }}
      - key: {{ $tls.caKey }}
        path: ca.crt
      {{- end }}
      {{- if $tls.certKey }}
      - key: {{ $tls.certKey }}
        path: tls.crt
      - key: {{ $tls.keyKey }}
        path: tls.key
      {{- end }}
    defaultMode: 0440
{{- end -}}
{{- end -}}
