# A VPC with three private subnets in three availability zones and no
# internet route: S3 is reached through a gateway endpoint, Secrets Manager
# (and SSM, for Session Manager access to the controllers) through interface
# endpoints.

data "aws_availability_zones" "available" {
  state = "available"
  # only the zones every account has: the three picked never change under us
  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
  filter {
    name   = "zone-type"
    values = ["availability-zone"]
  }
}

locals {
  zones = slice(data.aws_availability_zones.available.names, 0, 3)
}

resource "aws_vpc" "shale" {
  cidr_block           = var.vpc_cidr
  enable_dns_hostnames = true
  enable_dns_support   = true
  tags                 = { Name = var.name }
}

resource "aws_subnet" "private" {
  count             = 3
  vpc_id            = aws_vpc.shale.id
  availability_zone = local.zones[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, count.index)
  tags              = { Name = "${var.name}-private-${local.zones[count.index]}" }
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.shale.id
  tags   = { Name = "${var.name}-private" }
}

resource "aws_route_table_association" "private" {
  count          = 3
  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.shale.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(["secretsmanager", "ssm", "ssmmessages", "ec2messages", "logs"])
  vpc_id              = aws_vpc.shale.id
  service_name        = "com.amazonaws.${var.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
}

# nothing may use the default security group
resource "aws_default_security_group" "default" {
  vpc_id = aws_vpc.shale.id
}

resource "aws_flow_log" "vpc" {
  vpc_id          = aws_vpc.shale.id
  traffic_type    = "REJECT"
  log_destination = aws_cloudwatch_log_group.flow.arn
  iam_role_arn    = aws_iam_role.flow.arn
}

resource "aws_security_group" "controllers" {
  name        = "${var.name}-controllers"
  description = "Shale controllers: reachable from gateways, compactors and each other only"
  vpc_id      = aws_vpc.shale.id
}

resource "aws_security_group" "functions" {
  name        = "${var.name}-functions"
  description = "Shale gateway and compactor functions: no inbound, out to controllers, S3 and endpoints"
  vpc_id      = aws_vpc.shale.id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-endpoints"
  description = "Interface endpoints: HTTPS from the controllers and the functions"
  vpc_id      = aws_vpc.shale.id
}

resource "aws_vpc_security_group_ingress_rule" "controllers_from_functions" {
  security_group_id            = aws_security_group.controllers.id
  referenced_security_group_id = aws_security_group.functions.id
  ip_protocol                  = "tcp"
  from_port                    = var.controller_port
  to_port                      = var.controller_port
  description                  = "controller API from gateways and compactors"
}

resource "aws_vpc_security_group_ingress_rule" "controllers_from_peers" {
  security_group_id            = aws_security_group.controllers.id
  referenced_security_group_id = aws_security_group.controllers.id
  ip_protocol                  = "tcp"
  from_port                    = var.controller_port
  to_port                      = var.controller_port
  description                  = "Raft RPCs between controllers"
}

resource "aws_vpc_security_group_egress_rule" "controllers_to_peers" {
  security_group_id            = aws_security_group.controllers.id
  referenced_security_group_id = aws_security_group.controllers.id
  ip_protocol                  = "tcp"
  from_port                    = var.controller_port
  to_port                      = var.controller_port
  description                  = "Raft RPCs between controllers"
}

resource "aws_vpc_security_group_egress_rule" "functions_to_controllers" {
  security_group_id            = aws_security_group.functions.id
  referenced_security_group_id = aws_security_group.controllers.id
  ip_protocol                  = "tcp"
  from_port                    = var.controller_port
  to_port                      = var.controller_port
  description                  = "controller API"
}

resource "aws_vpc_security_group_egress_rule" "https_to_s3" {
  for_each          = { controllers = aws_security_group.controllers.id, functions = aws_security_group.functions.id }
  security_group_id = each.value
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  description       = "S3 through the gateway endpoint"
}

resource "aws_vpc_security_group_egress_rule" "https_to_endpoints" {
  for_each                     = { controllers = aws_security_group.controllers.id, functions = aws_security_group.functions.id }
  security_group_id            = each.value
  referenced_security_group_id = aws_security_group.endpoints.id
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "Secrets Manager, SSM and CloudWatch Logs endpoints"
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  for_each                     = { controllers = aws_security_group.controllers.id, functions = aws_security_group.functions.id }
  security_group_id            = aws_security_group.endpoints.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  description                  = "HTTPS from ${each.key}"
}
