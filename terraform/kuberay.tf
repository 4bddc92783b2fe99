# The RayService and its companions: exactly what `kubectl kustomize ../kuberay` builds, with
# the image swapped for var.image. The namespace and the API-key Secret are made here.

locals {
  namespace = "vi-asr" # kuberay/kustomization.yaml `namespace:`
  # The image kuberay/kustomization.yaml names; tests/test_terraform.py checks they agree.
  image_placeholder = "image: vi-asr:0.1.0"
  documents = {
    for doc in data.kubectl_kustomize_documents.vi_asr.documents :
    "${yamldecode(doc).kind}/${yamldecode(doc).metadata.name}" => replace(doc, local.image_placeholder, "image: ${var.image}")
    if yamldecode(doc).kind != "Namespace"
  }
}

data "kubectl_kustomize_documents" "vi_asr" {
  target = "${path.module}/../kuberay"
}

resource "kubernetes_namespace_v1" "vi_asr" {
  metadata {
    name = local.namespace
    labels = {
      "app.kubernetes.io/name" = "vi-asr"
    }
  }

  depends_on = [digitalocean_kubernetes_node_pool.ray]
}

resource "random_password" "asr_api_key" {
  length  = 40
  special = false
}

# Read by the Ray pods as ASR_API_KEY (optional there: without it the POST routes are open).
resource "kubernetes_secret_v1" "asr_api_key" {
  metadata {
    name      = "vi-asr-api-key"
    namespace = kubernetes_namespace_v1.vi_asr.metadata[0].name
  }
  data = {
    ASR_API_KEY = random_password.asr_api_key.result
  }
}

resource "kubectl_manifest" "vi_asr" {
  for_each = local.documents

  yaml_body          = each.value
  override_namespace = local.namespace
  server_side_apply  = true # the dashboard ConfigMaps outgrow client-side apply's annotation
  wait               = false

  depends_on = [
    helm_release.kuberay_operator,      # RayService CRD
    helm_release.kube_prometheus_stack, # PodMonitor CRD
    kubernetes_secret_v1.asr_api_key,
  ]
}
