# A DOKS cluster for the ASR service: a small system pool and an autoscaling pool for Ray.

data "digitalocean_kubernetes_versions" "this" {
  version_prefix = var.kubernetes_version_prefix
}

resource "digitalocean_container_registry" "this" {
  count                  = var.create_registry ? 1 : 0
  name                   = var.registry_name
  subscription_tier_slug = var.registry_tier
  region                 = var.region
}

resource "digitalocean_kubernetes_cluster" "this" {
  name    = var.cluster_name
  region  = var.region
  version = data.digitalocean_kubernetes_versions.this.latest_version

  # Versions move only when kubernetes_version_prefix does: a RayService upgrade and a node
  # upgrade at once would need room for two Ray clusters on draining nodes.
  auto_upgrade  = false
  surge_upgrade = true

  # Nodes may pull from the account's container registry.
  registry_integration = true

  maintenance_policy {
    day        = "sunday"
    start_time = "03:00"
  }

  node_pool {
    name       = "${var.cluster_name}-system"
    size       = var.system_node_size
    node_count = var.system_node_count
    labels = {
      workload = "system"
    }
  }

  depends_on = [digitalocean_container_registry.this]
}

# Ray pods tolerate the taint (kuberay/rayservice.yaml) and prefer these nodes; nothing else
# lands here, so the cluster autoscaler adds and removes nodes as the Ray autoscaler asks for
# worker pods.
resource "digitalocean_kubernetes_node_pool" "ray" {
  cluster_id = digitalocean_kubernetes_cluster.this.id
  name       = "${var.cluster_name}-ray"
  size       = var.ray_node_size
  auto_scale = true
  min_nodes  = var.ray_min_nodes
  max_nodes  = var.ray_max_nodes
  labels = {
    workload = "ray"
  }
  taint {
    key    = "workload"
    value  = "ray"
    effect = "NoSchedule"
  }
}
