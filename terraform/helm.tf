resource "helm_release" "kuberay_operator" {
  name             = "kuberay-operator"
  repository       = var.kuberay_chart_repository
  chart            = "kuberay-operator"
  version          = var.kuberay_operator_version
  namespace        = "kuberay-system" # kuberay/networkpolicy.yaml lets this namespace reach the dashboard
  create_namespace = true
  atomic           = true
  timeout          = 600

  depends_on = [digitalocean_kubernetes_node_pool.ray]
}

resource "random_password" "grafana_admin" {
  length  = 24
  special = false
}

resource "helm_release" "kube_prometheus_stack" {
  name             = "kube-prometheus-stack" # the head pod's RAY_PROMETHEUS_HOST/RAY_GRAFANA_HOST use this name
  repository       = var.prometheus_chart_repository
  chart            = "kube-prometheus-stack"
  version          = var.kube_prometheus_stack_version
  namespace        = "monitoring" # kuberay/networkpolicy.yaml lets this namespace scrape Ray
  create_namespace = true
  atomic           = true
  timeout          = 900

  values = [yamlencode({
    prometheus = {
      prometheusSpec = {
        # Pick up kuberay/'s PodMonitors whatever their labels.
        podMonitorSelectorNilUsesHelmValues     = false
        serviceMonitorSelectorNilUsesHelmValues = false
        retention                               = var.prometheus_retention
        resources = {
          requests = { cpu = "250m", memory = "1Gi" }
          limits   = { memory = "2Gi" }
        }
      }
    }
    grafana = {
      adminPassword = random_password.grafana_admin.result
      sidecar = {
        dashboards = {
          enabled         = true
          label           = "grafana_dashboard"
          labelValue      = "1"
          searchNamespace = "ALL" # kuberay/'s dashboard ConfigMaps live in the vi-asr namespace
        }
      }
    }
  })]

  depends_on = [digitalocean_kubernetes_node_pool.ray]
}
