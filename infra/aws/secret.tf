# The cluster secret: controllers require it on every Raft RPC and API call,
# gateways and compactors present it. Generated once, kept in Secrets Manager.

resource "random_password" "cluster" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "cluster" {
  name                    = "${var.name}/cluster-secret"
  description             = "Shale cluster secret"
  kms_key_id              = aws_kms_key.shale.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "cluster" {
  secret_id     = aws_secretsmanager_secret.cluster.id
  secret_string = random_password.cluster.result
}
