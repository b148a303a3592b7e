"""Wait up to argv[2] seconds for the reply of job argv[1] in the local AWS's S3 (s3://tl-replies/replies/<id>.json,
with /opt/moto/bin/python) and print it; exit 1 when it did not come."""

import sys
import time

import boto3

job_id, limit_s = sys.argv[1], float(sys.argv[2])
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5000", region_name="eu-central-1",
                  aws_access_key_id="t", aws_secret_access_key="t")  # fmt: skip
deadline = time.monotonic() + limit_s
while True:
    try:
        print(s3.get_object(Bucket="tl-replies", Key=f"replies/{job_id}.json")["Body"].read().decode())
        break
    except s3.exceptions.NoSuchKey:
        if time.monotonic() > deadline:
            sys.exit(f"no reply for {job_id} within {limit_s} s")
        time.sleep(0.2)
