output "gateway_urls" {
  description = "The gateways' HTTP API on the Docker host (loopback; put a TLS proxy in front to publish them)"
  value       = [for i in range(var.gateways) : "http://127.0.0.1:${var.gateway_port + i}"]
}

output "bucket" {
  description = "The bucket"
  value       = var.bucket
}

output "store_url" {
  description = "The store URL every part uses"
  value       = local.store_url
}
