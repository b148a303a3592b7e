"""Put argv[3] as s3://argv[1]/argv[2] in the local AWS on 127.0.0.1:5000 (with /opt/moto/bin/python)."""

import sys

import boto3

s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5000", region_name="eu-central-1",
                  aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip
s3.put_object(Bucket=sys.argv[1], Key=sys.argv[2], Body=sys.argv[3].encode())
