{{/* Names and labels. */}}
{{- define "facegallery.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "facegallery.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "facegallery.labels" -}}
{{ include "facegallery.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "facegallery.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/*
The settings every process of the release reads (the ConfigMap's settings.yaml): the values'
settings with what the chart owns set over them. Keys the chart owns are refused in the values,
so that nobody wonders which of two places wins.
*/}}
{{- define "facegallery.settings" -}}
{{- $settings := deepCopy .Values.settings -}}
{{- $gallery := get $settings "gallery" | default dict -}}
{{- if or (hasKey $gallery "uri") (hasKey $gallery "token") -}}
{{- fail "settings.gallery.uri / token: say Milvus's address as externalMilvus.uri and its credentials as externalMilvus.existingSecret" -}}
{{- end -}}
{{- if hasKey (get $settings "queue" | default dict) "url" -}}
{{- fail "settings.queue.url: say Redis as externalRedis.url / existingSecret, or turn on redisServer" -}}
{{- end -}}
{{- if or (hasKey $settings "milvus") (hasKey $settings "redis") -}}
{{- fail "settings.milvus / settings.redis configure the servers `facegallery up` starts on one machine; on Kubernetes use externalMilvus and externalRedis / redisServer" -}}
{{- end -}}
{{- $serving := get $settings "serving" | default dict -}}
{{- if hasKey $serving "metrics_dir" -}}
{{- fail "settings.serving.metrics_dir is the chart's (each pod's metrics volume)" -}}
{{- end -}}
{{- if hasKey $serving "host" -}}
{{- fail "settings.serving.host is the chart's (0.0.0.0: the serve Service reaches every pod's proxy)" -}}
{{- end -}}
{{- if eq (get $serving "proxy_location" | default "EveryNode") "HeadOnly" -}}
{{- fail "settings.serving.proxy_location: HeadOnly leaves the workers without the proxy KubeRay's readiness probe checks; keep EveryNode" -}}
{{- end -}}
{{- $_ := set $serving "host" "0.0.0.0" -}}
{{- $_ := set $serving "metrics_dir" (include "facegallery.metricsDir" .) -}}
{{- $_ := set $settings "serving" $serving -}}
{{- $_ := set $gallery "uri" .Values.externalMilvus.uri -}}
{{- $_ := set $settings "gallery" $gallery -}}
{{- toYaml $settings -}}
{{- end -}}

{{/*
The settings a node's own processes read when they start: serving without its deployments
(`facegallery serve env`), and what the exporter reads (facegallery.serving.exporter: the
queue, its decode bounds, Milvus, and the models and embedding that name the collection).
*/}}
{{- define "facegallery.nodeSettings" -}}
{{- $settings := include "facegallery.settings" . | fromYaml -}}
{{- $node := pick $settings "gallery" "queue" "decode" "models" "embed" -}}
{{- $_ := set $node "serving" (omit (get $settings "serving") "gateway" "detector" "embedder" "workers") -}}
{{- toYaml $node -}}
{{- end -}}

{{- define "facegallery.metricsDir" -}}/var/run/facegallery/metrics{{- end -}}
{{- define "facegallery.settingsFile" -}}/etc/facegallery/settings.yaml{{- end -}}

{{/* The serving section as the application sees it: the defaults, then the settings. */}}
{{- define "facegallery.serving" -}}
{{- $settings := include "facegallery.settings" . | fromYaml -}}
{{- $defaults := .Files.Get "files/serving-defaults.yaml" | fromYaml -}}
{{- toYaml (mergeOverwrite $defaults (get $settings "serving")) -}}
{{- end -}}

{{/*
The Serve config (serveConfigV2): the same document as `facegallery serve config` renders for
these settings (facegallery.serving.app.serve_config; tests/ops/test_helm_chart.py renders
both for every shipped values file and compares them).
*/}}
{{- define "facegallery.serveConfig" -}}
{{- $settings := include "facegallery.settings" . | fromYaml -}}
{{- $serving := include "facegallery.serving" . | fromYaml -}}
{{- $deployments := list -}}
{{- range $pair := list (list "Gateway" "gateway") (list "Detector" "detector") (list "Embedder" "embedder") (list "EnrollmentWorkers" "workers") -}}
{{- $d := get $serving (index $pair 1) -}}
{{- $actor := dict "num_cpus" $d.num_cpus "num_gpus" $d.num_gpus "resources" $d.resources "runtime_env" (dict "env_vars" (dict "PROMETHEUS_MULTIPROC_DIR" "${FACEGALLERY_NODE_METRICS_DIR}")) -}}
{{- $options := dict "name" (index $pair 0) "max_ongoing_requests" $d.max_ongoing_requests "max_queued_requests" $d.max_queued_requests "ray_actor_options" $actor -}}
{{- if not (kindIs "invalid" $d.max_replicas_per_node) -}}
{{- $_ := set $options "max_replicas_per_node" $d.max_replicas_per_node -}}
{{- end -}}
{{- if eq (toString $d.num_replicas) "auto" -}}
{{- $_ := set $options "autoscaling_config" (dict "min_replicas" $d.min_replicas "max_replicas" $d.max_replicas "target_ongoing_requests" $d.target_ongoing_requests) -}}
{{- else -}}
{{- $_ := set $options "num_replicas" $d.num_replicas -}}
{{- end -}}
{{- if eq (index $pair 0) "Gateway" -}}
{{- $_ := set $options "backpressure_config" (dict "status_code" 429 "retry_after_s" $serving.retry_after_s) -}}
{{- end -}}
{{- $deployments = append $deployments $options -}}
{{- end -}}
{{- $app := dict "name" $serving.app_name "route_prefix" "/" "import_path" "facegallery.serving.app:build" "args" (dict "settings" $settings) "deployments" $deployments -}}
{{- $servicers := list "facegallery.v1.facegallery_pb2_grpc.add_FaceGalleryServiceServicer_to_server" "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server" -}}
{{- toYaml (dict "proxy_location" $serving.proxy_location "http_options" (dict "host" $serving.host "port" $serving.http_port) "grpc_options" (dict "port" $serving.grpc_port "grpc_servicer_functions" $servicers) "applications" (list $app)) -}}
{{- end -}}

{{/* Where the queue's Redis is: a Secret's URL, the values' URL, or the in-chart Redis. */}}
{{- define "facegallery.redisEnv" -}}
{{- $external := .Values.externalRedis -}}
{{- $ways := 0 -}}
{{- if $external.url }}{{ $ways = add1 $ways }}{{ end -}}
{{- if $external.existingSecret }}{{ $ways = add1 $ways }}{{ end -}}
{{- if .Values.redisServer.enabled }}{{ $ways = add1 $ways }}{{ end -}}
{{- if ne (int $ways) 1 -}}
{{- fail "Redis: give exactly one of externalRedis.url, externalRedis.existingSecret, redisServer.enabled=true" -}}
{{- end -}}
- name: FACEGALLERY_QUEUE__URL
{{- if $external.existingSecret }}
  valueFrom:
    secretKeyRef:
      name: {{ $external.existingSecret }}
      key: {{ $external.existingSecretKey }}
{{- else if $external.url }}
  value: {{ $external.url | quote }}
{{- else }}
  value: {{ printf "redis://%s-redis:6379/0" (include "facegallery.fullname" .) | quote }}
{{- end }}
{{- end -}}

{{/* The environment of every facegallery process: its settings file and the secrets. */}}
{{- define "facegallery.env" -}}
- name: FACEGALLERY_CONFIG
  value: {{ include "facegallery.settingsFile" . }}
{{ include "facegallery.redisEnv" . }}
{{- if .Values.externalMilvus.existingSecret }}
- name: FACEGALLERY_GALLERY__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalMilvus.existingSecret }}
      key: {{ .Values.externalMilvus.existingSecretKey }}
{{- end }}
{{- end -}}

{{- define "facegallery.settingsVolume" -}}
- name: settings
  configMap:
    name: {{ include "facegallery.fullname" . }}-settings
{{- end -}}

{{- define "facegallery.settingsMount" -}}
- name: settings
  mountPath: {{ dir (include "facegallery.settingsFile" .) }}
  readOnly: true
{{- end -}}

{{- define "facegallery.securityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/*
A Ray node's pod template: the Ray container (the node's environment from `facegallery serve
env`, then KubeRay's own `ray start`) and the node's metrics exporter beside it, sharing the
metrics volume. Arguments: the root context, the component name, the group's values, whether
it is the head.
*/}}
{{- define "facegallery.rayPod" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $group := index . 2 -}}
{{- $head := index . 3 -}}
{{- $serving := include "facegallery.serving" $root | fromYaml -}}
metadata:
  # Labels that a chart version does not change: they are part of the cluster spec, whose
  # change starts a second cluster (upgradeStrategy).
  labels:
    {{- include "facegallery.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
  annotations:
    # KubeRay leaves the command alone and gives its `ray start` as KUBERAY_GEN_RAY_START_CMD.
    ray.io/overwrite-container-cmd: "true"
    # What the node's processes read only when they start (`facegallery serve env`: the
    # proxies' bounds and admission; the exporter: Redis, Milvus and the collection the
    # models name): a change rolls the cluster. The rest reach the replicas through
    # serveConfigV2, in place.
    checksum/node-settings: {{ include "facegallery.nodeSettings" $root | sha256sum }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    fsGroup: 1000
  containers:
    - name: {{ ternary "ray-head" "ray-worker" $head }}
      image: {{ include "facegallery.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["/bin/bash", "-c", "--"]
      args:
        - >-
          ulimit -n 65536; node_env="$(facegallery serve env)" && eval "$node_env"
          && eval "exec $KUBERAY_GEN_RAY_START_CMD"
      env:
        {{- include "facegallery.env" $root | nindent 8 }}
      ports:
        {{- if $head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ $serving.http_port }}}
        - {name: serve-grpc, containerPort: {{ $serving.grpc_port }}}
        - {name: metrics, containerPort: {{ $serving.ray_metrics_port }}}
      resources:
        {{- $resources := deepCopy $group.resources }}
        {{- if and (not $head) (gt (int $group.gpus) 0) }}
        {{- $_ := set $resources "requests" (merge (dict "nvidia.com/gpu" $group.gpus) ($resources.requests | default dict)) }}
        {{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $group.gpus) ($resources.limits | default dict)) }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- include "facegallery.securityContext" $root | nindent 8 }}
      volumeMounts:
        {{- include "facegallery.settingsMount" $root | nindent 8 }}
        - name: metrics
          mountPath: {{ include "facegallery.metricsDir" $root }}
    - name: metrics-exporter
      image: {{ include "facegallery.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      command: ["facegallery", "serve", "metrics", "--host", "0.0.0.0"{{ if $head }}, "--gauges"{{ end }}]
      env:
        {{- include "facegallery.env" $root | nindent 8 }}
      ports:
        - {name: exporter, containerPort: {{ $serving.metrics_port }}}
      # Listening is enough: a scrape of the head's exporter reads Redis and Milvus, whose
      # slowness must not take the head out of the serve Service.
      readinessProbe:
        tcpSocket: {port: exporter}
        periodSeconds: 10
      resources:
        requests: {cpu: 50m, memory: 128Mi}
        limits: {memory: 256Mi}
      securityContext:
        {{- include "facegallery.securityContext" $root | nindent 8 }}
      volumeMounts:
        {{- include "facegallery.settingsMount" $root | nindent 8 }}
        - name: metrics
          mountPath: {{ include "facegallery.metricsDir" $root }}
  volumes:
    {{- include "facegallery.settingsVolume" $root | nindent 4 }}
    - name: metrics
      emptyDir: {}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and (not $head) $root.Values.topologySpread.enabled }}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: {{ $root.Values.topologySpread.topologyKey }}
      whenUnsatisfiable: {{ $root.Values.topologySpread.whenUnsatisfiable }}
      labelSelector:
        matchLabels:
          {{- include "facegallery.selectorLabels" $root | nindent 10 }}
          app.kubernetes.io/component: {{ $component }}
  {{- end }}
{{- end -}}
