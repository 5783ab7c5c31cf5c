variable "name" {
  description = "Prefix of every resource's name"
  type        = string
  default     = "shale"
}

variable "region" {
  description = "AWS region"
  type        = string
  default     = "us-east-1"
}

variable "bucket_name" {
  description = "The data bucket (segments, archive, controller snapshots); globally unique"
  type        = string
}

variable "store_prefix" {
  description = "Prefix inside the bucket"
  type        = string
  default     = "shale"
}

variable "artifacts_bucket" {
  description = "Bucket holding the release artifacts: shale-lambda.zip and the shale binary"
  type        = string
}

variable "lambda_zip_key" {
  description = "Key of the shale-lambda zip (bootstrap inside) in artifacts_bucket"
  type        = string
  default     = "shale-lambda-arm64.zip"
}

variable "shale_binary_key" {
  description = "Key of the shale binary for the controllers in artifacts_bucket"
  type        = string
  default     = "shale-arm64"
}

variable "architecture" {
  description = "arm64 or x86_64, for the functions and the controllers alike"
  type        = string
  default     = "arm64"
  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture is arm64 or x86_64"
  }
}

variable "controller_instance_type" {
  description = "EC2 type of each controller (arm64: t4g/m7g, x86_64: t3/m7i)"
  type        = string
  default     = "t4g.small"
}

variable "controller_volume_gib" {
  description = "Size of each controller's data volume (Raft log and snapshots)"
  type        = number
  default     = 20
}

variable "controller_port" {
  description = "Port of the controllers' Raft RPCs and controller API"
  type        = number
  default     = 7071
}

variable "vpc_cidr" {
  description = "CIDR of the VPC the controllers and functions share"
  type        = string
  default     = "10.42.0.0/16"
}

variable "gateway_auth" {
  description = "NONE: Shale's bearer tokens are the access control; AWS_IAM: callers also sign with SigV4"
  type        = string
  default     = "NONE"
  validation {
    condition     = contains(["NONE", "AWS_IAM"], var.gateway_auth)
    error_message = "gateway_auth is NONE or AWS_IAM"
  }
}

variable "gateway_memory_mb" {
  description = "Memory (and so CPU) of the gateway function"
  type        = number
  default     = 1024
}

variable "gateway_concurrency" {
  description = "Reserved concurrency of the gateway function"
  type        = number
  default     = 100
}

variable "compactor_schedule" {
  description = "EventBridge schedule of the compactor"
  type        = string
  default     = "rate(1 minute)"
}

variable "compactor_timeout_s" {
  description = "Timeout of one compactor invocation; a pass fits within it"
  type        = number
  default     = 300
}

variable "log_retention_days" {
  description = "Retention of every log group"
  type        = number
  default     = 365
}

variable "secrets_extension_layer_arn" {
  description = "ARN of the AWS Parameters and Secrets Lambda Extension layer for this region and architecture"
  type        = string
}
