# The one place that maps Shale's flags to the environment each deployment
# sets. Every name is a flag's environment name (`shale <command> --help`
# and `_HANDLER=gateway shale-lambda --help` list them); tests/tests/infra.rs
# checks that against the binaries.

terraform {
  required_version = ">= 1.6"
}

variable "store_url" {
  description = "The bucket and prefix: s3://BUCKET/PREFIX"
  type        = string
}

variable "s3_region" {
  description = "The bucket's region"
  type        = string
}

variable "s3_endpoint" {
  description = "S3 endpoint for self-hosted stores (empty on AWS)"
  type        = string
  default     = ""
}

variable "s3_allow_http" {
  description = "Allow a plain-HTTP S3 endpoint"
  type        = bool
  default     = false
}

variable "controller_urls" {
  description = "Every controller's URL, http://HOST:PORT"
  type        = list(string)
}

variable "cluster_secret_file" {
  description = "Path of the cluster secret on hosts and containers"
  type        = string
  default     = ""
}

variable "cluster_secret_arn" {
  description = "Secrets Manager secret holding the cluster secret (Lambda reads it through the extension)"
  type        = string
  default     = ""
}

variable "log_format" {
  description = "text or json"
  type        = string
  default     = "json"
}

locals {
  store = merge(
    {
      SHALE_STORE     = var.store_url
      SHALE_S3_REGION = var.s3_region
    },
    var.s3_endpoint == "" ? {} : { SHALE_S3_ENDPOINT = var.s3_endpoint },
    var.s3_allow_http ? { SHALE_S3_ALLOW_HTTP = "true" } : {},
  )
  secret_file = var.cluster_secret_file == "" ? {} : { SHALE_CLUSTER_SECRET_FILE = var.cluster_secret_file }
  secret_arn  = var.cluster_secret_arn == "" ? {} : { SHALE_CLUSTER_SECRET_ARN = var.cluster_secret_arn }
  common      = merge(local.store, { SHALE_LOG_FORMAT = var.log_format })
  controllers = join(",", var.controller_urls)
}

output "controller" {
  description = "Every controller's environment; add SHALE_NODE_ID, SHALE_LISTEN, SHALE_PEERS, SHALE_DATA_DIR per node"
  value       = merge(local.common, local.secret_file)
}

output "gateway" {
  description = "A gateway's environment (shale gateway or shale-lambda with _HANDLER=gateway)"
  value       = merge(local.common, local.secret_file, local.secret_arn, { SHALE_CONTROLLERS = local.controllers })
}

output "compactor" {
  description = "A compactor's environment (shale compactor or shale-lambda with _HANDLER=compactor)"
  value       = merge(local.common, local.secret_file, local.secret_arn, { SHALE_CONTROLLERS = local.controllers })
}
