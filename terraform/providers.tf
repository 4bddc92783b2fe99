# The DigitalOcean token comes from the environment only: export DIGITALOCEAN_TOKEN=...
# (never a variable, never a file in this directory).
provider "digitalocean" {}

locals {
  kube_host  = digitalocean_kubernetes_cluster.this.endpoint
  kube_token = digitalocean_kubernetes_cluster.this.kube_config[0].token
  kube_ca    = base64decode(digitalocean_kubernetes_cluster.this.kube_config[0].cluster_ca_certificate)
}

provider "kubernetes" {
  host                   = local.kube_host
  token                  = local.kube_token
  cluster_ca_certificate = local.kube_ca
}

provider "helm" {
  kubernetes = {
    host                   = local.kube_host
    token                  = local.kube_token
    cluster_ca_certificate = local.kube_ca
  }
}

provider "kubectl" {
  host                   = local.kube_host
  token                  = local.kube_token
  cluster_ca_certificate = local.kube_ca
  load_config_file       = false
}
