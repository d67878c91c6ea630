{{/* vim: set filetype=mustache: */}}

{{- define "signalr-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name: release-chart, shortened to the 63 characters a DNS label allows.
*/}}
{{- define "signalr-sidecar.fullname" -}}
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

{{- define "signalr-sidecar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "signalr-sidecar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "signalr-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "signalr-sidecar.labels" -}}
helm.sh/chart: {{ include "signalr-sidecar.chart" . }}
{{ include "signalr-sidecar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: signalr-sidecar
{{- end -}}

{{- define "signalr-sidecar.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "signalr-sidecar.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) -}}
{{- end -}}

{{/* Secret (name and key) that holds the Redis URL. */}}
{{- define "signalr-sidecar.redisSecretName" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecret -}}
{{- else -}}
{{- include "signalr-sidecar.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.redisSecretKey" -}}
{{- if .Values.redis.existingSecret -}}
{{- .Values.redis.existingSecretKey -}}
{{- else -}}
redis-url
{{- end -}}
{{- end -}}

{{/* Secret (name and key) that holds the HS256 JWT secret. */}}
{{- define "signalr-sidecar.jwtSecretName" -}}
{{- if .Values.auth.jwt.existingSecret -}}
{{- .Values.auth.jwt.existingSecret -}}
{{- else -}}
{{- include "signalr-sidecar.fullname" . -}}
{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.jwtSecretKey" -}}
{{- if .Values.auth.jwt.existingSecret -}}
{{- .Values.auth.jwt.existingSecretKey -}}
{{- else -}}
jwt-secret
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the chart itself must create the Secret. */}}
{{- define "signalr-sidecar.createRedisSecret" -}}
{{- if and .Values.redis.enabled (not .Values.redis.existingSecret) .Values.redis.url -}}true{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.createJwtSecret" -}}
{{- if and (eq .Values.auth.mode "jwt") (not .Values.auth.jwt.existingSecret) .Values.auth.jwt.secret -}}true{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.hasJwks" -}}
{{- if and (eq .Values.auth.mode "jwt") (or .Values.auth.jwt.jwks .Values.auth.jwt.jwksExistingConfigMap) -}}true{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.hasPublicKey" -}}
{{- if and (eq .Values.auth.mode "jwt") .Values.auth.jwt.publicKey -}}true{{- end -}}
{{- end -}}

{{- define "signalr-sidecar.hasRoutes" -}}
{{- if or .Values.routes.content .Values.routes.existingConfigMap -}}true{{- end -}}
{{- end -}}

{{/* True when the chart renders its own ConfigMap (routes, JWKS or PEM key). */}}
{{- define "signalr-sidecar.createConfigMap" -}}
{{- if or .Values.routes.content (and (eq .Values.auth.mode "jwt") (or .Values.auth.jwt.jwks .Values.auth.jwt.publicKey)) -}}true{{- end -}}
{{- end -}}

{{/*
Replica count: replicaCount, or the deprecated alias `replicas` when it is
set (not null). The alias wins: an install that set `replicas` keeps its
count on upgrade, where replicaCount's default would silently replace it.
NOTES.txt reports the deprecation.
*/}}
{{- define "signalr-sidecar.replicaCount" -}}
{{- if kindIs "invalid" .Values.replicas -}}
{{- int .Values.replicaCount -}}
{{- else -}}
{{- int .Values.replicas -}}
{{- end -}}
{{- end -}}

{{/* Where the TLS Secret (tls.crt, tls.key) is mounted: a directory, never a
subPath, so the kubelet's swap of a renewed Secret reaches the container. */}}
{{- define "signalr-sidecar.tlsDir" -}}/etc/signalr-sidecar/tls{{- end -}}

{{/*
Pod grace period: it must outlast the drain window plus a shutdown margin,
or the kubelet kills the sidecar (SIGKILL) while clients are still being
told to reconnect. Default: drain window + shutdown timeout + 5 s.
*/}}
{{- define "signalr-sidecar.shutdownMarginSeconds" -}}5{{- end -}}

{{- define "signalr-sidecar.terminationGracePeriodSeconds" -}}
{{- $drain := int .Values.drainWindowSeconds -}}
{{- $margin := int (include "signalr-sidecar.shutdownMarginSeconds" .) -}}
{{- $preStop := int (.Values.preStopSleepSeconds | default 0) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $preStop $drain (int .Values.shutdownTimeoutSeconds) $margin -}}
{{- else -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- $shutdown := int .Values.shutdownTimeoutSeconds -}}
{{- if le $grace (add $preStop $shutdown $margin | int) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than preStopSleepSeconds (%d) + shutdownTimeoutSeconds (%d, the process's own deadline from SIGTERM, drain included) + %d s margin" $grace $preStop $shutdown $margin) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
{{- end -}}

{{/* Checks the JSON schema cannot express; rendered for their failures only. */}}
{{- define "signalr-sidecar.validate" -}}
{{- if and (eq .Values.mode "injected") (not .Values.backend.image.repository) -}}
{{- fail "mode: injected needs backend.image.repository (the backend the sidecar is injected beside)" -}}
{{- end -}}
{{- if and (eq .Values.mode "injected") (not .Values.backend.image.tag) -}}
{{- fail "mode: injected needs backend.image.tag (an explicit version, not latest)" -}}
{{- end -}}
{{- if .Values.redis.enabled -}}
{{- if not (or .Values.redis.url .Values.redis.existingSecret) -}}
{{- fail "redis.enabled needs redis.url or redis.existingSecret (or set redis.enabled=false for the in-process bus)" -}}
{{- end -}}
{{- if and .Values.redis.tls (not .Values.redis.existingSecret) -}}
{{- range $u := splitList "," .Values.redis.url -}}
{{- if not (hasPrefix "rediss://" (trim $u)) -}}
{{- fail (printf "redis.tls is true but the URL %q does not use the rediss:// scheme" (regexReplaceAll "//[^@/]*@" (trim $u) "//***@")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.auth.mode "jwt" -}}
{{- $j := .Values.auth.jwt -}}
{{- if not (or $j.secret $j.existingSecret $j.jwks $j.jwksExistingConfigMap $j.publicKey) -}}
{{- fail "auth.mode: jwt needs auth.jwt.secret, auth.jwt.existingSecret, auth.jwt.jwks, auth.jwt.jwksExistingConfigMap or auth.jwt.publicKey" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.hpa.enabled (eq .Values.hpa.metric "cpu") (eq .Values.mode "injected") -}}
{{- if not (dig "requests" "cpu" "" .Values.backend.resources) -}}
{{- fail "hpa.metric: cpu in mode: injected needs backend.resources.requests.cpu (CPU utilization is computed over every container of the pod)" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret with tls.crt and tls.key)" -}}
{{- end -}}
{{- if and .Values.tls.enabled .Values.ingress.enabled (eq .Values.mode "injected") -}}
{{- range .Values.ingress.hosts -}}
{{- if .backendPaths -}}
{{- fail "tls.enabled with ingress.hosts[].backendPaths: one Ingress cannot speak HTTPS to the sidecar and plain HTTP to the backend; end TLS at the Ingress (ingress.tls, tls.enabled=false) or route the backend with an Ingress of its own" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.routes.content .Values.routes.existingConfigMap -}}
{{- fail "set routes.content or routes.existingConfigMap, not both" -}}
{{- end -}}
{{- if eq (int .Values.ports.client) (int .Values.ports.admin) -}}
{{- fail (printf "ports.client and ports.admin are both %d: the admin port (metrics, probes, POST /internal/events) must not be the client port, and the sidecar refuses to start otherwise (SIDECAR_LISTEN, SIDECAR_ADMIN_LISTEN)" (int .Values.ports.client)) -}}
{{- end -}}
{{- if le (int .Values.shutdownTimeoutSeconds) (int .Values.drainWindowSeconds) -}}
{{- fail (printf "shutdownTimeoutSeconds (%d) must be greater than drainWindowSeconds (%d): the drain runs inside the shutdown deadline, and the sidecar refuses to start otherwise (SIDECAR_SHUTDOWN_TIMEOUT_SECONDS)" (int .Values.shutdownTimeoutSeconds) (int .Values.drainWindowSeconds)) -}}
{{- end -}}
{{- $_ := include "signalr-sidecar.terminationGracePeriodSeconds" . -}}
{{- end -}}

{{/* The sidecar container, the same in both modes. */}}
{{- define "signalr-sidecar.container" -}}
- name: signalr-sidecar
  image: {{ include "signalr-sidecar.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  ports:
    - name: http
      containerPort: {{ .Values.ports.client }}
      protocol: TCP
    - name: admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  env:
    - name: SIDECAR_LISTEN
      value: {{ printf "0.0.0.0:%d" (int .Values.ports.client) | quote }}
    - name: SIDECAR_ADMIN_LISTEN
      value: {{ printf "0.0.0.0:%d" (int .Values.ports.admin) | quote }}
    # One consumer group per pod: "<group prefix>:<pod name>".
    - name: SIDECAR_INSTANCE_ID
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: SIDECAR_DRAIN_WINDOW_SECONDS
      value: {{ int .Values.drainWindowSeconds | quote }}
    - name: SIDECAR_SHUTDOWN_TIMEOUT_SECONDS
      value: {{ int .Values.shutdownTimeoutSeconds | quote }}
    - name: SIDECAR_LOG_FORMAT
      value: {{ .Values.log.format | quote }}
    {{- with .Values.log.level }}
    - name: SIDECAR_LOG
      value: {{ . | quote }}
    {{- end }}
    {{- if .Values.redis.enabled }}
    - name: SIDECAR_REDIS_URL
      valueFrom:
        secretKeyRef:
          name: {{ include "signalr-sidecar.redisSecretName" . }}
          key: {{ include "signalr-sidecar.redisSecretKey" . }}
    - name: SIDECAR_REDIS_CLUSTER
      value: {{ .Values.redis.cluster | toString | quote }}
    {{- if .Values.redis.caConfigMap }}
    - name: SIDECAR_REDIS_CA_FILE
      value: /etc/signalr-sidecar/redis-ca/ca.crt
    {{- end }}
    {{- with .Values.redis.streams }}
    - name: SIDECAR_STREAMS
      value: {{ join "," . | quote }}
    {{- end }}
    {{- with .Values.redis.groupPrefix }}
    - name: SIDECAR_GROUP_PREFIX
      value: {{ . | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" .Values.redis.orphanGroupIdleSeconds) }}
    - name: SIDECAR_ORPHAN_GROUP_IDLE_SECONDS
      value: {{ int .Values.redis.orphanGroupIdleSeconds | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" .Values.redis.readWindowMs) }}
    - name: SIDECAR_READ_WINDOW_MS
      value: {{ int .Values.redis.readWindowMs | quote }}
    {{- end }}
    {{- end }}
    {{- if not (kindIs "invalid" .Values.redis.presenceTtlSeconds) }}
    - name: SIDECAR_PRESENCE_TTL_SECONDS
      value: {{ int .Values.redis.presenceTtlSeconds | quote }}
    {{- end }}
    - name: SIDECAR_AUTH
      value: {{ .Values.auth.mode | quote }}
    {{- if eq .Values.auth.mode "jwt" }}
    {{- if or .Values.auth.jwt.secret .Values.auth.jwt.existingSecret }}
    - name: SIDECAR_JWT_SECRET
      valueFrom:
        secretKeyRef:
          name: {{ include "signalr-sidecar.jwtSecretName" . }}
          key: {{ include "signalr-sidecar.jwtSecretKey" . }}
    {{- end }}
    {{- if include "signalr-sidecar.hasJwks" . }}
    - name: SIDECAR_JWKS_FILE
      value: /etc/signalr-sidecar/jwks/jwks.json
    {{- end }}
    {{- if include "signalr-sidecar.hasPublicKey" . }}
    - name: SIDECAR_JWT_PUBLIC_KEY_FILE
      value: /etc/signalr-sidecar/jwt/public.pem
    {{- end }}
    {{- with .Values.auth.jwt.issuer }}
    - name: SIDECAR_JWT_ISSUER
      value: {{ . | quote }}
    {{- end }}
    {{- with .Values.auth.jwt.audience }}
    - name: SIDECAR_JWT_AUDIENCE
      value: {{ . | quote }}
    {{- end }}
    {{- if not (kindIs "invalid" .Values.auth.jwt.leewaySeconds) }}
    - name: SIDECAR_JWT_LEEWAY_SECONDS
      value: {{ int .Values.auth.jwt.leewaySeconds | quote }}
    {{- end }}
    {{- end }}
    {{- if include "signalr-sidecar.hasRoutes" . }}
    - name: SIDECAR_ROUTES
      value: /etc/signalr-sidecar/routes/routes.toml
    {{- end }}
    {{- if .Values.tls.enabled }}
    # TLS on the client port; re-read when the mounted Secret changes.
    - name: SIDECAR_TLS_CERT_FILE
      value: {{ printf "%s/tls.crt" (include "signalr-sidecar.tlsDir" .) | quote }}
    - name: SIDECAR_TLS_KEY_FILE
      value: {{ printf "%s/tls.key" (include "signalr-sidecar.tlsDir" .) | quote }}
    {{- end }}
    {{- with .Values.adminToken.existingSecret }}
    # Bearer token of the /admin/ introspection API on the admin port.
    - name: SIDECAR_ADMIN_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ . }}
          key: {{ $.Values.adminToken.existingSecretKey }}
    {{- end }}
    {{- with .Values.cors.origins }}
    - name: SIDECAR_CORS_ORIGINS
      value: {{ join "," . | quote }}
    {{- end }}
    {{- if .Values.otel.endpoint }}
    - name: OTEL_EXPORTER_OTLP_ENDPOINT
      value: {{ .Values.otel.endpoint | quote }}
    - name: OTEL_EXPORTER_OTLP_PROTOCOL
      value: {{ .Values.otel.protocol | quote }}
    - name: OTEL_SERVICE_NAME
      value: {{ .Values.otel.serviceName | default (include "signalr-sidecar.fullname" .) | quote }}
    - name: OTEL_TRACES_SAMPLER
      value: parentbased_traceidratio
    - name: OTEL_TRACES_SAMPLER_ARG
      value: {{ .Values.otel.samplerRatio | toString | quote }}
    - name: OTEL_RESOURCE_ATTRIBUTES
      value: {{ printf "k8s.pod.name=$(SIDECAR_INSTANCE_ID),k8s.namespace.name=%s%s" .Release.Namespace (ternary (printf ",%s" .Values.otel.resourceAttributes) "" (ne .Values.otel.resourceAttributes "")) | quote }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: admin
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: admin
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  {{- if gt (int (.Values.preStopSleepSeconds | default 0)) 0 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ int .Values.preStopSleepSeconds }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: sidecar-tmp
      mountPath: /tmp
    {{- if include "signalr-sidecar.hasRoutes" . }}
    - name: routes
      mountPath: /etc/signalr-sidecar/routes
      readOnly: true
    {{- end }}
    {{- if include "signalr-sidecar.hasJwks" . }}
    - name: jwks
      mountPath: /etc/signalr-sidecar/jwks
      readOnly: true
    {{- end }}
    {{- if include "signalr-sidecar.hasPublicKey" . }}
    - name: jwt-public-key
      mountPath: /etc/signalr-sidecar/jwt
      readOnly: true
    {{- end }}
    {{- if .Values.tls.enabled }}
    - name: tls
      mountPath: {{ include "signalr-sidecar.tlsDir" . }}
      readOnly: true
    {{- end }}
    {{- if and .Values.redis.enabled .Values.redis.caConfigMap }}
    - name: redis-ca
      mountPath: /etc/signalr-sidecar/redis-ca
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* Volumes of the sidecar container. */}}
{{- define "signalr-sidecar.volumes" -}}
- name: sidecar-tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if and .Values.redis.enabled .Values.redis.caConfigMap }}
- name: redis-ca
  configMap:
    name: {{ .Values.redis.caConfigMap }}
    items:
      - key: {{ .Values.redis.caConfigMapKey }}
        path: ca.crt
{{- end }}
{{- if include "signalr-sidecar.hasRoutes" . }}
- name: routes
  configMap:
    {{- if .Values.routes.existingConfigMap }}
    name: {{ .Values.routes.existingConfigMap }}
    items:
      - key: {{ .Values.routes.existingConfigMapKey }}
        path: routes.toml
    {{- else }}
    name: {{ include "signalr-sidecar.fullname" . }}
    items:
      - key: routes.toml
        path: routes.toml
    {{- end }}
{{- end }}
{{- if include "signalr-sidecar.hasJwks" . }}
- name: jwks
  configMap:
    {{- if .Values.auth.jwt.jwksExistingConfigMap }}
    name: {{ .Values.auth.jwt.jwksExistingConfigMap }}
    items:
      - key: {{ .Values.auth.jwt.jwksExistingConfigMapKey }}
        path: jwks.json
    {{- else }}
    name: {{ include "signalr-sidecar.fullname" . }}
    items:
      - key: jwks.json
        path: jwks.json
    {{- end }}
{{- end }}
{{- if include "signalr-sidecar.hasPublicKey" . }}
- name: jwt-public-key
  configMap:
    name: {{ include "signalr-sidecar.fullname" . }}
    items:
      - key: jwt-public-key.pem
        path: public.pem
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}
