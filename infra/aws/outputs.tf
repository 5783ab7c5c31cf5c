output "gateway_url" {
  description = "The gateway's Function URL: Shale's /v1 API"
  value       = aws_lambda_function_url.gateway.function_url
}

output "bucket" {
  description = "The data bucket"
  value       = aws_s3_bucket.data.bucket
}

output "store_url" {
  description = "The store URL every part uses"
  value       = local.store_url
}

output "controller_urls" {
  description = "The controllers (private addresses)"
  value       = local.controller_urls
}

output "cluster_secret_arn" {
  description = "Secrets Manager secret holding the cluster secret"
  value       = aws_secretsmanager_secret.cluster.arn
}
