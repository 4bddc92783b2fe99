output "cluster_id" {
  description = "DOKS cluster id (doctl kubernetes cluster kubeconfig save <id>)."
  value       = digitalocean_kubernetes_cluster.this.id
}

output "kubernetes_version" {
  description = "The DOKS version slug picked by kubernetes_version_prefix."
  value       = digitalocean_kubernetes_cluster.this.version
}

output "kubeconfig_command" {
  description = "Writes a kubeconfig entry for this cluster."
  value       = "doctl kubernetes cluster kubeconfig save ${digitalocean_kubernetes_cluster.this.id}"
}

output "registry_endpoint" {
  description = "Push the image here: <endpoint>/vi-asr:<tag> (empty when create_registry is false)."
  value       = var.create_registry ? digitalocean_container_registry.this[0].endpoint : ""
}

output "serve_endpoint_command" {
  description = "Prints the LoadBalancer address of the ASR service (port 8000) once DigitalOcean has assigned it."
  value       = "kubectl -n ${local.namespace} get service vi-asr-serve -o jsonpath='{.status.loadBalancer.ingress[0].ip}'"
}

output "grafana_command" {
  description = "Port-forwards Grafana to http://127.0.0.1:3000 (user admin)."
  value       = "kubectl -n monitoring port-forward service/kube-prometheus-stack-grafana 3000:80"
}

output "grafana_admin_password" {
  description = "Grafana's admin password."
  value       = random_password.grafana_admin.result
  sensitive   = true
}

output "asr_api_key" {
  description = "Bearer token for the POST routes (Authorization: Bearer <key>)."
  value       = random_password.asr_api_key.result
  sensitive   = true
}
