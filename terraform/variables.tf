variable "cluster_name" {
  type        = string
  description = "Name of the DOKS cluster (also the prefix of its node pools)."
  default     = "vi-asr"
}

variable "region" {
  type        = string
  description = "DigitalOcean region slug; sgp1 is the closest to Vietnam."
  default     = "sgp1"
}

variable "kubernetes_version_prefix" {
  type        = string
  description = "Kubernetes minor version to run, as a prefix of DOKS's version slugs (the newest patch is picked). Upgrade by raising it."
  default     = "1.35."

  validation {
    condition     = can(regex("^1\\.[0-9]+\\.$", var.kubernetes_version_prefix))
    error_message = "Use a minor-version prefix such as \"1.35.\"."
  }
}

variable "system_node_size" {
  type        = string
  description = "Droplet size of the default pool: KubeRay operator, Prometheus, Grafana, DOKS add-ons."
  default     = "s-2vcpu-4gb"
}

variable "system_node_count" {
  type        = number
  description = "Nodes in the default (system) pool."
  default     = 2
}

variable "ray_node_size" {
  type        = string
  description = "Droplet size of the Ray pool. 4 vCPU / 8 GB holds one Ray worker pod (3 CPU / 5 GiB) or the head (1 CPU / 3 GiB); 2 vCPU / 4 GB cannot hold a Ray head next to the DOKS daemons."
  default     = "s-4vcpu-8gb"
}

variable "ray_min_nodes" {
  type        = number
  description = "Lower bound of the Ray pool's autoscaling: the head and the minimum worker."
  default     = 2

  validation {
    condition     = var.ray_min_nodes >= 1
    error_message = "The Ray pool needs at least one node."
  }
}

variable "ray_max_nodes" {
  type        = number
  description = "Upper bound of the Ray pool's autoscaling. A RayService upgrade runs a second Ray cluster next to the first until it is healthy: leave room for two (2 heads share a node; workers take one node each)."
  default     = 6

  validation {
    condition     = var.ray_max_nodes >= var.ray_min_nodes
    error_message = "ray_max_nodes must be >= ray_min_nodes."
  }
}

variable "create_registry" {
  type        = bool
  description = "Create a DigitalOcean Container Registry for the image (an account has one; set false if yours exists)."
  default     = true
}

variable "registry_name" {
  type        = string
  description = "Name of the container registry (created when create_registry is true, else the existing one)."
  default     = "vi-asr"
}

variable "registry_tier" {
  type        = string
  description = "Container registry subscription tier (starter holds one repository; basic is enough for this image)."
  default     = "basic"
}

variable "image" {
  type        = string
  description = "The service image the Ray pods run, pushed beforehand (docs/deploy.md), e.g. \"<registry endpoint>/vi-asr:0.1.0\"."
}

variable "kuberay_chart_repository" {
  type        = string
  description = "Helm repository of the kuberay-operator chart."
  default     = "https://ray-project.github.io/kuberay-helm/"
}

variable "kuberay_operator_version" {
  type        = string
  description = "kuberay-operator chart version; its CRDs are the ones tests/data/kuberay-crds validates against."
  default     = "1.7.0"
}

variable "prometheus_chart_repository" {
  type        = string
  description = "Helm repository of the kube-prometheus-stack chart."
  default     = "https://prometheus-community.github.io/helm-charts"
}

variable "kube_prometheus_stack_version" {
  type        = string
  description = "kube-prometheus-stack chart version (Prometheus operator, Prometheus, Grafana)."
  default     = "82.6.0"
}

variable "prometheus_retention" {
  type        = string
  description = "How long Prometheus keeps metrics."
  default     = "15d"
}
