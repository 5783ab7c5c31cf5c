# Shale on self-hosted S3-compatible storage: three controllers (each with a
# volume), gateways and a compactor as long-running containers on one Docker
# host (or a remote one through docker_host). The bucket is made by
# `shale store init`, which runs on the machine that applies.

locals {
  endpoint_is_http = startswith(var.s3_endpoint, "http://")
  store_url        = "s3://${var.bucket}/${var.store_prefix}"
  controller_names = [for i in range(3) : "${var.name}-controller-${i + 1}"]
  controller_urls  = [for n in local.controller_names : "http://${n}:${var.controller_port}"]
  peers            = join(",", [for i, n in local.controller_names : "${i + 1}=${n}:${var.controller_port}"])
  secret_path      = "/etc/shale/cluster.secret"
  credentials = {
    SHALE_S3_ACCESS_KEY_ID     = var.s3_access_key_id
    SHALE_S3_SECRET_ACCESS_KEY = var.s3_secret_access_key
  }
}

module "env" {
  source              = "../modules/env"
  store_url           = local.store_url
  s3_region           = var.s3_region
  s3_endpoint         = var.s3_endpoint
  s3_allow_http       = local.endpoint_is_http
  controller_urls     = local.controller_urls
  cluster_secret_file = local.secret_path
  log_format          = "json"
}

resource "terraform_data" "bucket" {
  input = local.store_url
  provisioner "local-exec" {
    command = "${var.shale_cli} store init --store ${local.store_url}"
    environment = merge(
      {
        SHALE_S3_ENDPOINT          = var.s3_endpoint
        SHALE_S3_REGION            = var.s3_region
        SHALE_S3_ACCESS_KEY_ID     = var.s3_access_key_id
        SHALE_S3_SECRET_ACCESS_KEY = var.s3_secret_access_key
      },
      local.endpoint_is_http ? { SHALE_S3_ALLOW_HTTP = "true" } : {},
    )
  }
}

resource "random_password" "cluster" {
  length  = 48
  special = false
}

resource "docker_network" "shale" {
  name = var.name
}

resource "docker_volume" "controller" {
  count = 3
  name  = local.controller_names[count.index]
}

resource "docker_container" "controller" {
  count    = 3
  name     = local.controller_names[count.index]
  image    = var.image
  command  = ["controller"]
  restart  = "unless-stopped"
  hostname = local.controller_names[count.index]
  env = [for k, v in merge(module.env.controller, local.credentials, {
    SHALE_NODE_ID  = tostring(count.index + 1)
    SHALE_LISTEN   = "0.0.0.0:${var.controller_port}"
    SHALE_PEERS    = local.peers
    SHALE_DATA_DIR = "/var/lib/shale"
  }) : "${k}=${v}"]
  networks_advanced {
    name = docker_network.shale.id
  }
  volumes {
    volume_name    = docker_volume.controller[count.index].name
    container_path = "/var/lib/shale"
  }
  upload {
    file    = local.secret_path
    content = random_password.cluster.result
  }
  depends_on = [terraform_data.bucket]
}

resource "docker_container" "gateway" {
  count   = var.gateways
  name    = "${var.name}-gateway-${count.index + 1}"
  image   = var.image
  command = ["gateway", "--admin-token-file=/var/lib/shale/admin.token"]
  restart = "unless-stopped"
  env = [for k, v in merge(module.env.gateway, local.credentials, {
    SHALE_LISTEN    = "0.0.0.0:${var.gateway_port}"
    SHALE_ADVERTISE = "http://${var.name}-gateway-${count.index + 1}:${var.gateway_port}"
  }) : "${k}=${v}"]
  networks_advanced {
    name = docker_network.shale.id
  }
  ports {
    internal = var.gateway_port
    external = var.gateway_port + count.index
    ip       = "127.0.0.1"
  }
  upload {
    file    = local.secret_path
    content = random_password.cluster.result
  }
  depends_on = [docker_container.controller]
}

resource "docker_container" "compactor" {
  name    = "${var.name}-compactor"
  image   = var.image
  command = ["compactor"]
  restart = "unless-stopped"
  env     = [for k, v in merge(module.env.compactor, local.credentials) : "${k}=${v}"]
  networks_advanced {
    name = docker_network.shale.id
  }
  upload {
    file    = local.secret_path
    content = random_password.cluster.result
  }
  depends_on = [docker_container.controller]
}
