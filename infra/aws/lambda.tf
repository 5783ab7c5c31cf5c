# The gateway behind a Function URL and the compactor on an EventBridge
# schedule: one shale-lambda zip, the role chosen by the handler setting.

locals {
  functions = {
    gateway = {
      memory      = var.gateway_memory_mb
      timeout     = 60
      concurrency = var.gateway_concurrency
      environment = module.function_env.gateway
    }
    compactor = {
      memory  = 1024
      timeout = var.compactor_timeout_s
      # one pass at a time: leases split partitions among compactors anyway
      concurrency = 1
      environment = module.function_env.compactor
    }
  }
}

resource "aws_lambda_function" "shale" {
  for_each                       = local.functions
  function_name                  = "${var.name}-${each.key}"
  role                           = aws_iam_role.function[each.key].arn
  runtime                        = "provided.al2023"
  handler                        = each.key
  architectures                  = [var.architecture]
  s3_bucket                      = var.artifacts_bucket
  s3_key                         = var.lambda_zip_key
  memory_size                    = each.value.memory
  timeout                        = each.value.timeout
  reserved_concurrent_executions = each.value.concurrency
  kms_key_arn                    = aws_kms_key.shale.arn
  layers                         = [var.secrets_extension_layer_arn]
  environment {
    variables = each.value.environment
  }
  vpc_config {
    subnet_ids         = aws_subnet.private[*].id
    security_group_ids = [aws_security_group.functions.id]
  }
  tracing_config {
    mode = "Active"
  }
  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }
  depends_on = [aws_iam_role_policy.function, aws_cloudwatch_log_group.function]
}

resource "aws_lambda_function_url" "gateway" {
  function_name      = aws_lambda_function.shale["gateway"].function_name
  authorization_type = var.gateway_auth
}

resource "aws_cloudwatch_event_rule" "compactor" {
  name                = "${var.name}-compactor"
  description         = "One bounded compaction pass per tick"
  schedule_expression = var.compactor_schedule
}

resource "aws_cloudwatch_event_target" "compactor" {
  rule = aws_cloudwatch_event_rule.compactor.name
  arn  = aws_lambda_function.shale["compactor"].arn
}

resource "aws_lambda_permission" "compactor_schedule" {
  statement_id  = "AllowEventBridge"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.shale["compactor"].function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.compactor.arn
}

resource "aws_cloudwatch_log_group" "function" {
  for_each          = local.functions
  name              = "/aws/lambda/${var.name}-${each.key}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.shale.arn
}

resource "aws_cloudwatch_log_group" "controller" {
  name              = "/shale/${var.name}/controllers"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.shale.arn
}

resource "aws_cloudwatch_log_group" "flow" {
  name              = "/shale/${var.name}/vpc-flow"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.shale.arn
}
