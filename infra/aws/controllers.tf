# Three controllers, one per availability zone, each with its own encrypted
# data volume for the Raft log and snapshots. They are long-lived because
# Raft needs stable members with durable disks; everything else is a function.

data "aws_ssm_parameter" "al2023" {
  name = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  controller_ips  = [for i in range(3) : cidrhost(aws_subnet.private[i].cidr_block, 10)]
  controller_urls = [for ip in local.controller_ips : "http://${ip}:${var.controller_port}"]
  peers           = join(",", [for i, ip in local.controller_ips : "${i + 1}=${ip}:${var.controller_port}"])
  store_url       = "s3://${aws_s3_bucket.data.bucket}/${var.store_prefix}"
  secret_path     = "/etc/shale/cluster.secret"
}

module "env" {
  source              = "../modules/env"
  store_url           = local.store_url
  s3_region           = var.region
  controller_urls     = local.controller_urls
  cluster_secret_file = local.secret_path
}

module "function_env" {
  source             = "../modules/env"
  store_url          = local.store_url
  s3_region          = var.region
  controller_urls    = local.controller_urls
  cluster_secret_arn = aws_secretsmanager_secret.cluster.arn
}

resource "aws_ebs_volume" "controller" {
  count             = 3
  availability_zone = local.zones[count.index]
  size              = var.controller_volume_gib
  type              = "gp3"
  encrypted         = true
  kms_key_id        = aws_kms_key.shale.arn
  tags              = { Name = "${var.name}-controller-${count.index + 1}" }
}

resource "aws_instance" "controller" {
  count                  = 3
  ami                    = data.aws_ssm_parameter.al2023.value
  instance_type          = var.controller_instance_type
  subnet_id              = aws_subnet.private[count.index].id
  private_ip             = local.controller_ips[count.index]
  vpc_security_group_ids = [aws_security_group.controllers.id]
  iam_instance_profile   = aws_iam_instance_profile.controller.name
  ebs_optimized          = true
  monitoring             = true
  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  root_block_device {
    encrypted  = true
    kms_key_id = aws_kms_key.shale.arn
  }
  user_data = templatefile("${path.module}/controller.sh.tftpl", {
    artifact    = "s3://${var.artifacts_bucket}/${var.shale_binary_key}"
    secret_arn  = aws_secretsmanager_secret.cluster.arn
    secret_path = local.secret_path
    region      = var.region
    volume_id   = aws_ebs_volume.controller[count.index].id
    log_group   = aws_cloudwatch_log_group.controller.name
    environment = merge(module.env.controller, {
      SHALE_NODE_ID  = tostring(count.index + 1)
      SHALE_LISTEN   = "${local.controller_ips[count.index]}:${var.controller_port}"
      SHALE_PEERS    = local.peers
      SHALE_DATA_DIR = "/var/lib/shale"
    })
  })
  user_data_replace_on_change = false
  tags                        = { Name = "${var.name}-controller-${count.index + 1}" }
}

resource "aws_volume_attachment" "controller" {
  count       = 3
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.controller[count.index].id
  instance_id = aws_instance.controller[count.index].id
}
