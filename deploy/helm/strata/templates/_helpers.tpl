{{/* Names and labels shared by every object. */}}

{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The StatefulSet's name: pods are <fullname>-0, -1, -2. Short enough
that "<fullname>-N" and "<fullname>-federation-N" stay DNS labels. */}}
{{- define "strata.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "strata.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "strata.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The headless service giving each replica a stable DNS name. */}}
{{- define "strata.peers" -}}
{{- printf "%s-peers" (include "strata.fullname" .) -}}
{{- end -}}

{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "strata.labels" -}}
{{ include "strata.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
strata.dev/role: {{ .Values.node.role }}
{{- end -}}

{{/* "<pod>.<peers>.<namespace>.svc.<domain>:<port>": replica i's channel address. */}}
{{- define "strata.replicaAddr" -}}
{{- $ := index . 0 -}}
{{- printf "%s-%d.%s.%s.svc.%s:%d" (include "strata.fullname" $) (index . 1) (include "strata.peers" $) $.Release.Namespace $.Values.clusterDomain (int $.Values.cluster.port) -}}
{{- end -}}

{{- define "strata.tlsSecret" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" (include "strata.fullname" .)) -}}
{{- end -}}

{{- define "strata.adminSecret" -}}
{{- .Values.admin.existingSecret | default (printf "%s-admin" (include "strata.fullname" .)) -}}
{{- end -}}

{{/* strata.yaml of replica i (list $ i): values.config under the keys the
chart owns. Every replica is the same node; only cluster differs. The
replica's certificate on the channel is issued at its first start into
the volume's root (tls/ holds the Secret's files, mounted one by one). */}}
{{- define "strata.config" -}}
{{- $ := index . 0 -}}
{{- $i := int (index . 1) -}}
{{- $v := $.Values -}}
{{- $cfg := deepCopy ($v.config | default dict) -}}
{{- $own := dict "name" $v.node.name "role" $v.node.role "data_dir" "data" -}}
{{- $_ := set $own "api" (dict "addr" (printf "0.0.0.0:%d" (int $v.api.port))) -}}
{{- if $v.mqtt.enabled -}}
{{- $mqtt := dict "addr" (printf "0.0.0.0:%d" (int $v.mqtt.port)) -}}
{{- if $v.mqtt.advertise -}}{{- $_ := set $mqtt "advertise" $v.mqtt.advertise -}}{{- end -}}
{{- $_ := set $own "mqtt" $mqtt -}}
{{- end -}}
{{- $fed := dict -}}
{{- if $v.federation.enabled -}}{{- $_ := set $fed "addr" (printf "0.0.0.0:%d" (int $v.federation.port)) -}}{{- end -}}
{{- if $v.federation.upstreams -}}{{- $_ := set $fed "upstreams" $v.federation.upstreams -}}{{- end -}}
{{- if $fed -}}{{- $_ := set $own "federation" $fed -}}{{- end -}}
{{- $cl := dict "id" (printf "%s-%d" (include "strata.fullname" $) $i) "addr" (printf "0.0.0.0:%d" (int $v.cluster.port)) "advertise" (include "strata.replicaAddr" (list $ $i)) "tls_cert" "replica.crt" "tls_key" "replica.key" -}}
{{- if and $v.cluster.bootstrap (eq $i 0) -}}
{{- $_ := set $cl "bootstrap" true -}}
{{- else -}}
{{- /* While the cluster is being made, a replica joins through replica 0
only: asked by another replica not in the cluster yet (which knows no
leader), a join would wait on it for good. Once it exists, through any. */ -}}
{{- $join := list -}}
{{- range $j := until (int $v.replicas) -}}
{{- if and (ne $j $i) (or (not $v.cluster.bootstrap) (eq $j 0)) -}}
{{- $join = append $join (include "strata.replicaAddr" (list $ $j)) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $cl "join" $join -}}
{{- end -}}
{{- $_ := set $own "cluster" (merge $cl (get $cfg "cluster" | default dict)) -}}
{{- $cfg = mustMergeOverwrite $cfg $own -}}
{{- toYaml $cfg -}}
{{- end -}}
