variable "name" {
  description = "Prefix of every container, volume and network"
  type        = string
  default     = "shale"
}

variable "docker_host" {
  description = "The Docker daemon that runs Shale, e.g. unix:///var/run/docker.sock or ssh://admin@host"
  type        = string
  default     = "unix:///var/run/docker.sock"
}

variable "image" {
  description = "The Shale image (docker build -f infra/Dockerfile -t shale:0.1.0 .)"
  type        = string
  default     = "shale:0.1.0"
}

variable "s3_endpoint" {
  description = "The S3 endpoint of MinIO, Garage or Ceph RGW, as the containers reach it"
  type        = string
}

variable "s3_region" {
  description = "The region the store expects (MinIO: us-east-1, Garage: garage)"
  type        = string
  default     = "us-east-1"
}

variable "s3_access_key_id" {
  description = "Access key with read, write, list and delete on the bucket"
  type        = string
}

variable "s3_secret_access_key" {
  description = "Its secret"
  type        = string
  sensitive   = true
}

variable "bucket" {
  description = "The bucket; shale store init creates it when missing"
  type        = string
  default     = "shale"
}

variable "store_prefix" {
  description = "Prefix inside the bucket"
  type        = string
  default     = "shale"
}

variable "shale_cli" {
  description = "The shale binary on the machine running terraform, for shale store init"
  type        = string
  default     = "shale"
}

variable "controller_port" {
  description = "Port of the controllers' Raft RPCs and controller API"
  type        = number
  default     = 7071
}

variable "gateway_port" {
  description = "Port of the first gateway's HTTP API on the Docker host; the next gateways take the following ports"
  type        = number
  default     = 7070
}

variable "gateways" {
  description = "How many gateways"
  type        = number
  default     = 2
}
