# Least privilege: each role gets exactly the S3 actions its code calls
# (tests/tests/infra.rs checks them against the store requests the binaries
# make), on the store prefix only.

locals {
  objects = "${aws_s3_bucket.data.arn}/${var.store_prefix}/*"
  # object_store call -> S3 action: put (and multipart parts) PutObject,
  # get/head/ranged get GetObject, delete DeleteObject, list ListBucket
  s3_actions = {
    gateway    = ["s3:PutObject", "s3:GetObject"]
    compactor  = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    controller = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
  }
  # who lists the bucket (the compactor's garbage collection, the
  # controllers' snapshot discovery)
  lists = { gateway = false, compactor = true, controller = true }
}

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "assume_flow" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "role" {
  for_each = local.s3_actions
  statement {
    sid       = "Objects"
    actions   = each.value
    resources = [local.objects]
  }
  dynamic "statement" {
    for_each = local.lists[each.key] ? [1] : []
    content {
      sid       = "List"
      actions   = ["s3:ListBucket"]
      resources = [aws_s3_bucket.data.arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${var.store_prefix}/*"]
      }
    }
  }
  statement {
    sid       = "Key"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.shale.arn]
  }
  statement {
    sid       = "ClusterSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.cluster.arn]
  }
  dynamic "statement" {
    for_each = each.key == "controller" ? [1] : []
    content {
      sid       = "Binary"
      actions   = ["s3:GetObject"]
      resources = ["arn:aws:s3:::${var.artifacts_bucket}/${var.shale_binary_key}"]
    }
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = each.key == "controller" ? ["${aws_cloudwatch_log_group.controller.arn}:*"] : ["${aws_cloudwatch_log_group.function[each.key].arn}:*"]
  }
}

resource "aws_iam_role" "function" {
  for_each           = local.functions
  name               = "${var.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
}

resource "aws_iam_role_policy" "function" {
  for_each = local.functions
  name     = "shale"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.role[each.key].json
}

# network interfaces in the VPC, and X-Ray traces
resource "aws_iam_role_policy_attachment" "function_vpc" {
  for_each   = local.functions
  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
}

resource "aws_iam_role_policy_attachment" "function_xray" {
  for_each   = local.functions
  role       = aws_iam_role.function[each.key].name
  policy_arn = "arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess"
}

resource "aws_iam_role" "controller" {
  name               = "${var.name}-controller"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

resource "aws_iam_role_policy" "controller" {
  name   = "shale"
  role   = aws_iam_role.controller.id
  policy = data.aws_iam_policy_document.role["controller"].json
}

# Session Manager instead of SSH: no inbound port, no key pairs
resource "aws_iam_role_policy_attachment" "controller_ssm" {
  role       = aws_iam_role.controller.name
  policy_arn = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "controller" {
  name = "${var.name}-controller"
  role = aws_iam_role.controller.name
}

resource "aws_iam_role" "flow" {
  name               = "${var.name}-flow-logs"
  assume_role_policy = data.aws_iam_policy_document.assume_flow.json
}

data "aws_iam_policy_document" "flow" {
  statement {
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.flow.arn}:*"]
  }
}

resource "aws_iam_role_policy" "flow" {
  name   = "flow-logs"
  role   = aws_iam_role.flow.id
  policy = data.aws_iam_policy_document.flow.json
}
