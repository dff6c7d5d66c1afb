{{/*
Chart name, overridable.
*/}}
{{- define "modelrollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of namespaced objects: the release name, suffixed with the chart name unless it already
contains it. Truncated to 63 characters, the limit of a DNS label.
*/}}
{{- define "modelrollout.fullname" -}}
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

{{/*
Name of cluster-scoped objects (ClusterRole, ClusterRoleBinding): qualified by the release
namespace, so the same release name in two namespaces does not collide.
*/}}
{{- define "modelrollout.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "modelrollout.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelrollout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ include "modelrollout.chart" . }}
{{ include "modelrollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelrollout
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels the Deployment selects its pods by. Never change them in an upgrade: a Deployment's
selector is immutable.
*/}}
{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image reference: the digest wins over the tag; the tag defaults to the appVersion.
*/}}
{{- define "modelrollout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "modelrollout.servingImage" -}}
{{- with .Values.operator.servingImage }}
{{- printf "%s:%s" .repository (default $.Chart.AppVersion .tag) }}
{{- end }}
{{- end }}

{{- define "modelrollout.servingImageGpu" -}}
{{- with .Values.operator.servingImage }}
{{- printf "%s:%s" .repository (default (printf "%s-gpu" (default $.Chart.AppVersion .tag)) .gpuTag) }}
{{- end }}
{{- end }}

{{/*
Namespaces the operator watches, as a JSON list; [] means the whole cluster. A namespaced install
with no list watches its own namespace: it holds no rights anywhere else.
*/}}
{{- define "modelrollout.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces }}
{{- toJson .Values.operator.watchNamespaces }}
{{- else if eq .Values.rbac.scope "namespace" }}
{{- list .Release.Namespace | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/*
Fail early on combinations the schema cannot express.
*/}}
{{- define "modelrollout.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) }}
{{- fail "replicaCount > 1 needs peering.enabled=true: without peering every replica would reconcile the same ModelDeployments at once" }}
{{- end }}
{{- if eq .Values.operator.metricsPort .Values.operator.healthPort }}
{{- fail "operator.metricsPort and operator.healthPort must differ" }}
{{- end }}
{{- end }}
