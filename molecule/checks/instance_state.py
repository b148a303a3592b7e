"""The state of the container's instance in the local AWS (its id in /etc/molecule-instance-id), with
/opt/moto/bin/python: running, stopping, stopped…"""

from pathlib import Path

import boto3

ec2 = boto3.client("ec2", endpoint_url="http://127.0.0.1:5000", region_name="eu-central-1",
                   aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip
instance = Path("/etc/molecule-instance-id").read_text().strip()
print(ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"])
