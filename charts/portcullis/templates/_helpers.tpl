{{/*
Names and labels.
*/}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/*
The server's pods. The component keeps the migration job's pod out of the Service and the
PodDisruptionBudget.
*/}}
{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The migration job runs before the chart's own ServiceAccount exists.
*/}}
{{- define "portcullis.migrationServiceAccountName" -}}
{{- if .Values.migration.serviceAccountName -}}
{{- .Values.migration.serviceAccountName -}}
{{- else if .Values.serviceAccount.create -}}
default
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The port the server listens on: the end of config.listen (host:port).
*/}}
{{- define "portcullis.port" -}}
{{- regexFind "[0-9]+$" .Values.config.listen -}}
{{- end -}}

{{/*
The port of config.metrics.listen, when /metrics has a listener of its own; else empty.
*/}}
{{- define "portcullis.metricsPort" -}}
{{- with dig "metrics" "listen" "" .Values.config -}}
{{- regexFind "[0-9]+$" . -}}
{{- end -}}
{{- end -}}

{{- define "portcullis.scheme" -}}
{{- if .Values.tls.secretName -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{- define "portcullis.externalURL" -}}
{{- if .Values.externalURL -}}
{{- trimSuffix "/" .Values.externalURL -}}
{{- else -}}
{{- printf "%s://%s.%s.svc:%d" (include "portcullis.scheme" .) (include "portcullis.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- end -}}
{{- end -}}

{{/*
Where the pieces are mounted in the container.
*/}}
{{- define "portcullis.configDir" -}}/etc/portcullis/config{{- end -}}
{{- define "portcullis.tokenKeyDir" -}}/etc/portcullis/token-key{{- end -}}
{{- define "portcullis.tlsDir" -}}/etc/portcullis/tls{{- end -}}

{{/*
portcullis.yaml: .Values.config with what the chart itself decides. test/charts/chart.test.ts
repeats these additions (every `set` below) to check the result with the server's loadConfig.
*/}}
{{- define "portcullis.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- $auth := $config.auth | default dict -}}
{{- $token := $auth.token | default dict -}}
{{- if not $token.realm -}}
{{- $_ := set $token "realm" (printf "%s/auth/token" (include "portcullis.externalURL" .)) -}}
{{- end -}}
{{- if .Values.secrets.tokenSigningKey.name -}}
{{- $_ := set $token "keyFile" (printf "%s/signing-key.pem" (include "portcullis.tokenKeyDir" .)) -}}
{{- end -}}
{{- $_ := set $auth "token" $token -}}
{{- $_ := set $config "auth" $auth -}}
{{- if .Values.tls.secretName -}}
{{- $_ := set $config "tls" (dict "certificate" (printf "%s/tls.crt" (include "portcullis.tlsDir" .)) "key" (printf "%s/tls.key" (include "portcullis.tlsDir" .))) -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{/*
One environment variable from a Secret, when the reference names one.
*/}}
{{- define "portcullis.secretEnv" -}}
{{- if .ref.name }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.name | quote }}
      key: {{ .ref.key | quote }}
{{- end }}
{{- end -}}

{{/*
The environment of the server and of the migration job: the configuration file and the secrets.
*/}}
{{- define "portcullis.env" -}}
- name: PORTCULLIS_CONFIG
  value: {{ printf "%s/portcullis.yaml" (include "portcullis.configDir" .) | quote }}
# What `portcullis serve` is meant to run with, whatever the image's entrypoint (src/cli/node-flags.ts).
- name: NODE_OPTIONS
  value: "--max-semi-space-size=32"
{{- include "portcullis.secretEnv" (dict "env" "PORTCULLIS_METADATA_POSTGRES_URL" "ref" .Values.secrets.databaseUrl) }}
{{- include "portcullis.secretEnv" (dict "env" "PORTCULLIS_STORAGE_S3_ACCESS_KEY_ID" "ref" .Values.secrets.s3AccessKeyId) }}
{{- include "portcullis.secretEnv" (dict "env" "PORTCULLIS_STORAGE_S3_SECRET_ACCESS_KEY" "ref" .Values.secrets.s3SecretAccessKey) }}
{{- include "portcullis.secretEnv" (dict "env" "PORTCULLIS_AUTH_LDAP_BIND_PASSWORD" "ref" .Values.secrets.ldapBindPassword) }}
{{- include "portcullis.secretEnv" (dict "env" "PORTCULLIS_ADMIN_PASSWORD" "ref" .Values.secrets.adminPassword) }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Several pods at once, now or through the autoscaler.
*/}}
{{- define "portcullis.several" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{/*
A data volume only one pod can use at a time.
*/}}
{{- define "portcullis.exclusiveVolume" -}}
{{- if and .Values.persistence.enabled (not (has "ReadWriteMany" .Values.persistence.accessModes)) -}}true{{- end -}}
{{- end -}}

{{- define "portcullis.strategy" -}}
{{- if .Values.updateStrategy -}}
{{- toYaml .Values.updateStrategy -}}
{{- else if or (eq .Values.config.metadata.driver "sqlite") (include "portcullis.exclusiveVolume" .) -}}
type: Recreate
{{- else -}}
type: RollingUpdate
rollingUpdate:
  maxSurge: 25%
  maxUnavailable: 0
{{- end -}}
{{- end -}}

{{/*
Combinations that would install and then fail, or serve wrongly, refused at `helm install`.
*/}}
{{- define "portcullis.validate" -}}
{{- $config := .Values.config -}}
{{- $metadata := $config.metadata | default dict -}}
{{- $storage := $config.storage | default dict -}}
{{- $filesystem := $storage.filesystem | default dict -}}
{{- $auth := $config.auth | default dict -}}
{{- $token := $auth.token | default dict -}}
{{- if include "portcullis.several" . -}}
{{- if eq (default "sqlite" $metadata.driver) "sqlite" -}}
{{- fail "several replicas (replicaCount > 1 or autoscaling.enabled) need config.metadata.driver: postgres: the embedded SQLite default serves from one process" -}}
{{- end -}}
{{- if include "portcullis.exclusiveVolume" . -}}
{{- fail "several replicas cannot share a ReadWriteOnce data volume: set persistence.enabled: false (with S3 and secrets.tokenSigningKey nothing lasting is kept in dataDir) or persistence.accessModes: [ReadWriteMany]" -}}
{{- end -}}
{{- if not (or .Values.secrets.tokenSigningKey.name $token.keyFile .Values.persistence.enabled) -}}
{{- fail "several replicas must sign tokens with one key: set secrets.tokenSigningKey (or share dataDir on a ReadWriteMany volume)" -}}
{{- end -}}
{{- if and (eq (default "filesystem" $storage.driver) "filesystem") (not $filesystem.root) (not .Values.persistence.enabled) -}}
{{- fail "several replicas must share one blob store: set config.storage.driver: s3 (or put dataDir on a ReadWriteMany volume)" -}}
{{- end -}}
{{- end -}}
{{- if and (eq (default "sqlite" $metadata.driver) "postgres") (not .Values.secrets.databaseUrl.name) (not (dig "postgres" "url" "" $metadata)) -}}
{{- fail "config.metadata.driver: postgres needs secrets.databaseUrl (a Secret holding the connection URL)" -}}
{{- end -}}
{{- if ne (empty .Values.secrets.s3AccessKeyId.name) (empty .Values.secrets.s3SecretAccessKey.name) -}}
{{- fail "secrets.s3AccessKeyId and secrets.s3SecretAccessKey go together: set both names, or neither for the AWS SDK's own chain" -}}
{{- end -}}
{{- if and .Values.secrets.ldapBindPassword.name (not $auth.ldap) -}}
{{- fail "secrets.ldapBindPassword needs config.auth.ldap (url, bindDn, user.baseDn)" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.externalURL) -}}
{{- fail "ingress.enabled needs externalURL (e.g. https://registry.example.org): clients are sent to <externalURL>/auth/token for tokens" -}}
{{- end -}}
{{- if not (include "portcullis.port" .) -}}
{{- fail "config.listen must end in a port, e.g. 0.0.0.0:5000" -}}
{{- end -}}
{{- $shutdown := $config.shutdown | default dict -}}
{{- $drain := int (dig "drainSeconds" 5 $shutdown) -}}
{{- $timeout := int (dig "timeoutSeconds" 60 $shutdown) -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add $drain $timeout) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least config.shutdown.drainSeconds + timeoutSeconds (%d + %d): Kubernetes would kill the server while it still finishes uploads" (int .Values.terminationGracePeriodSeconds) $drain $timeout) -}}
{{- end -}}
{{- if and .Values.metrics.scrapeAnnotations (not (dig "metrics" "enabled" true $config)) -}}
{{- fail "metrics.scrapeAnnotations needs config.metrics.enabled: the pods would be scraped for a /metrics that is not there" -}}
{{- end -}}
{{- end -}}

{{/*
An HTTP probe on the registry's port: dict "path" "/healthz" "probe" .Values.livenessProbe "root" $
*/}}
{{- define "portcullis.probe" -}}
httpGet:
  path: {{ .path }}
  port: registry
  scheme: {{ include "portcullis.scheme" .root | upper }}
{{- with omit .probe "enabled" }}
{{ toYaml . }}
{{- end }}
{{- end -}}
