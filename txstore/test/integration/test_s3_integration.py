"""
The S3 API on a real all-in-one (``txstore-aio``), driven by boto3, and by the aws CLI and
rclone's s3 backend when they are installed (``aws s3 sync``, ``rclone sync``/``check``, a
multipart upload among them): what S3 writes Swift reads
and back, byte for byte with its metadata (python-swiftclient on the other side); Signature V4
in the header and presigned, Signature V2; an upload whose body does not match its
``x-amz-content-sha256`` stores nothing; errors as S3 XML; what is not built refused.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import boto3
import boto3.s3.transfer
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from pathlib import Path
from unittest import SkipTest
from swiftclient import client as swift

from txstore.test.integration.test_proxy_integration import ClusterCase


class S3Tests(ClusterCase):
    def setUp(self) -> None:
        super().setUp()
        self.endpoint = f"http://127.0.0.1:{self.cluster.port}"

    def client(self, access: str = "test:tester", secret: str = "testing", version: str = "s3v4"):
        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                          region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}, signature_version=version,
                                        retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60))
        self.addCleanup(s3.close)
        return s3

    def code(self, call, *args, **kwargs) -> tuple[int, str]:
        with self.assertRaises(ClientError) as caught:
            call(*args, **kwargs)
        response = caught.exception.response
        return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]

    def test_round_trip_between_s3_and_swift(self) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket="shared")
        data = os.urandom(5 * 1024 * 1024 + 17)
        put = s3.put_object(Bucket="shared", Key="from s3/é.bin", Body=data, Metadata={"color": "blue"},
                            ContentType="application/x-test")
        self.assertEqual(put["ETag"], '"%s"' % hashlib.md5(data).hexdigest())
        url, token = self.cluster.token()
        headers, body = swift.get_object(url, token, "shared", "from s3/é.bin")
        self.assertEqual(body, data)
        self.assertEqual((headers["x-object-meta-color"], headers["content-type"]), ("blue", "application/x-test"))
        more = os.urandom(1024 * 1024 + 3)
        swift.put_object(url, token, "shared", "from swift", contents=more, headers={"X-Object-Meta-Shape": "round"})
        got = s3.get_object(Bucket="shared", Key="from swift")
        # twisted.web writes header names capitalised (X-Amz-Meta-Shape), so botocore's keys are too
        self.assertEqual((got["Body"].read(), {k.lower(): v for k, v in got["Metadata"].items()}),
                         (more, {"shape": "round"}))
        self.assertEqual(s3.get_object(Bucket="shared", Key="from swift", Range="bytes=10-19")["Body"].read(),
                         more[10:20])
        listed = s3.list_objects_v2(Bucket="shared")
        self.assertEqual([(o["Key"], o["Size"]) for o in listed["Contents"]],
                         [("from s3/é.bin", len(data)), ("from swift", len(more))])
        self.assertEqual([c["name"] for c in swift.get_account(url, token)[1]], ["shared"])
        s3.delete_object(Bucket="shared", Key="from swift")
        self.assertEqual(self.code(s3.delete_bucket, Bucket="shared"), (409, "BucketNotEmpty"))
        self.assertEqual([o["name"] for o in swift.get_container(url, token, "shared")[1]], ["from s3/é.bin"])

    def test_signature_forms(self) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket="forms")
        s3.put_object(Bucket="forms", Key="k", Body=b"value")
        v2 = self.client(version="s3")
        self.assertEqual(v2.get_object(Bucket="forms", Key="k")["Body"].read(), b"value")
        v2.put_object(Bucket="forms", Key="v2", Body=b"by v2")
        presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "forms", "Key": "v2"}, ExpiresIn=60)
        with urllib.request.urlopen(presigned, timeout=30) as response:
            self.assertEqual(response.read(), b"by v2")
        try:
            urllib.request.urlopen(presigned.replace("X-Amz-Expires=60", "X-Amz-Expires=61"), timeout=30)
        except urllib.error.HTTPError as err:
            self.assertEqual(err.code, 403)
            self.assertIn(b"<Code>SignatureDoesNotMatch</Code>", err.read())
        else:
            self.fail("a changed presigned URL was accepted")
        self.assertEqual(self.code(self.client(secret="wrong").list_buckets), (403, "SignatureDoesNotMatch"))
        self.assertEqual(self.code(self.client(access="no:body").list_buckets), (403, "InvalidAccessKeyId"))
        # tester3 owns nothing in AUTH_test
        self.assertEqual(self.code(self.client("test:tester3", "testing3").list_objects, Bucket="forms"),
                         (403, "AccessDenied"))

    def test_a_body_that_does_not_match_its_hash_is_not_stored(self) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket="checked")
        signed = AWSRequest(method="PUT", url=f"{self.endpoint}/checked/k", data=b"promised body")
        S3SigV4Auth(Credentials("test:tester", "testing"), "s3", "us-east-1").add_auth(signed)
        connection = http.client.HTTPConnection("127.0.0.1", self.cluster.port, timeout=30)
        self.addCleanup(connection.close)
        connection.request("PUT", "/checked/k", body=b"another body!", headers=dict(signed.headers.items()))
        response = connection.getresponse()
        body = response.read()
        self.assertEqual(response.status, 400, body)
        self.assertIn(b"<Code>XAmzContentSHA256Mismatch</Code>", body)
        self.assertEqual(self.code(s3.head_object, Bucket="checked", Key="k")[0], 404)
        url, token = self.cluster.token()
        self.assertEqual(swift.get_container(url, token, "checked")[1], [])

    def test_multipart_upload_is_a_static_large_object(self) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket="parts")
        data = os.urandom(12 * 1024 * 1024 + 5)
        path = os.path.join(self.mktemp())
        with open(path, "wb") as f:
            f.write(data)
        transfer = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * 1024 * 1024,
                                                    multipart_chunksize=5 * 1024 * 1024, max_concurrency=2)
        s3.upload_file(path, "parts", "big.bin", ExtraArgs={"Metadata": {"kind": "mpu"}}, Config=transfer)
        head = s3.head_object(Bucket="parts", Key="big.bin")
        digests = b"".join(hashlib.md5(data[i:i + 5 * 1024 * 1024]).digest() for i in range(0, len(data), 5 << 20))
        self.assertEqual(head["ETag"], '"%s-3"' % hashlib.md5(digests).hexdigest())
        self.assertEqual(head["ContentLength"], len(data))
        self.assertEqual(s3.list_objects_v2(Bucket="parts")["Contents"][0]["ETag"], head["ETag"])
        url, token = self.cluster.token()
        headers, body = swift.get_object(url, token, "parts", "big.bin")
        self.assertEqual((body == data, headers["x-static-large-object"], headers["x-object-meta-kind"]),
                         (True, "True", "mpu"))
        self.assertEqual(s3.get_object(Bucket="parts", Key="big.bin", Range="bytes=5242879-5242880")["Body"].read(),
                         data[5242879:5242881])
        # an aborted upload leaves nothing; deleting the object over S3 takes its parts
        upload = s3.create_multipart_upload(Bucket="parts", Key="gone")["UploadId"]
        s3.upload_part(Bucket="parts", Key="gone", UploadId=upload, PartNumber=1, Body=b"x")
        self.assertEqual([u["UploadId"] for u in s3.list_multipart_uploads(Bucket="parts")["Uploads"]], [upload])
        s3.abort_multipart_upload(Bucket="parts", Key="gone", UploadId=upload)
        self.assertEqual(self.code(s3.list_parts, Bucket="parts", Key="gone", UploadId=upload), (404, "NoSuchUpload"))
        s3.delete_object(Bucket="parts", Key="big.bin")
        self.assertEqual(swift.get_container(url, token, "parts+segments")[1], [])
        self.assertEqual([b["Name"] for b in s3.list_buckets()["Buckets"]], ["parts"])

    def test_a_100_mib_multipart_transfer(self) -> None:
        """boto3's own transfer (8 MiB parts, 4 threads) of 100 MiB up and down, md5 compared."""
        s3 = self.client()
        s3.create_bucket(Bucket="large")
        path, back = Path(self.mktemp()), Path(self.mktemp())
        digest = hashlib.md5()
        with path.open("wb") as f:
            for _ in range(100):
                piece = os.urandom(1024 * 1024)
                digest.update(piece)
                f.write(piece)
        transfer = boto3.s3.transfer.TransferConfig(multipart_chunksize=8 * 1024 * 1024, max_concurrency=4)
        s3.upload_file(str(path), "large", "100MiB", Config=transfer)
        head = s3.head_object(Bucket="large", Key="100MiB")
        self.assertEqual((head["ContentLength"], head["ETag"][-4:]), (100 * 1024 * 1024, '-13"'))
        s3.download_file("large", "100MiB", str(back), Config=transfer)
        got = hashlib.md5()
        with back.open("rb") as f:
            while piece := f.read(1024 * 1024):
                got.update(piece)
        self.assertEqual(got.hexdigest(), digest.hexdigest())

    def test_bucket_versioning(self) -> None:
        s3 = self.client()
        s3.create_bucket(Bucket="kept")
        self.assertNotIn("Status", s3.get_bucket_versioning(Bucket="kept"))
        s3.put_bucket_versioning(Bucket="kept", VersioningConfiguration={"Status": "Enabled"})
        self.assertEqual(s3.get_bucket_versioning(Bucket="kept")["Status"], "Enabled")
        first = s3.put_object(Bucket="kept", Key="k", Body=b"one")["VersionId"]
        second = s3.put_object(Bucket="kept", Key="k", Body=b"two")["VersionId"]
        self.assertEqual(s3.get_object(Bucket="kept", Key="k")["Body"].read(), b"two")
        self.assertEqual(s3.get_object(Bucket="kept", Key="k", VersionId=first)["Body"].read(), b"one")
        deleted = s3.delete_object(Bucket="kept", Key="k")
        self.assertTrue(deleted["DeleteMarker"])
        self.assertEqual(self.code(s3.get_object, Bucket="kept", Key="k"), (404, "NoSuchKey"))
        listed = s3.list_object_versions(Bucket="kept")
        self.assertEqual([(v["VersionId"], v["IsLatest"]) for v in listed["Versions"]],
                         [(second, False), (first, False)])
        self.assertEqual([(m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]],
                         [(deleted["VersionId"], True)])
        for version in (second, first, deleted["VersionId"]):
            s3.delete_object(Bucket="kept", Key="k", VersionId=version)
        self.assertNotIn("Versions", s3.list_object_versions(Bucket="kept"))
        s3.put_bucket_versioning(Bucket="kept", VersioningConfiguration={"Status": "Suspended"})
        self.assertEqual(s3.get_bucket_versioning(Bucket="kept")["Status"], "Suspended")
        s3.delete_bucket(Bucket="kept")

    def test_the_aws_cli(self) -> None:
        aws = shutil.which("aws")
        if aws is None:
            raise SkipTest("the aws CLI is not installed")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "test:tester", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

        def run(*args: str) -> str:
            done = subprocess.run([aws, "--endpoint-url", self.endpoint, *args], env=env, capture_output=True,
                                  text=True, timeout=300)
            self.assertEqual(done.returncode, 0, done.stderr)
            return done.stdout

        source, back = Path(self.mktemp()), Path(self.mktemp())
        (source / "sub").mkdir(parents=True)
        (source / "a.txt").write_bytes(b"hello\n")
        (source / "sub" / "b.txt").write_bytes(b"deep\n")
        big = os.urandom(9 * 1024 * 1024 + 1)  # past the CLI's 8 MiB threshold: a multipart upload
        (source / "big.bin").write_bytes(big)
        run("s3", "mb", "s3://cli")
        run("s3", "sync", str(source), "s3://cli/dir")
        listed = run("s3", "ls", "--recursive", "s3://cli")
        self.assertEqual([line.split()[-1] for line in listed.splitlines()],
                         ["dir/a.txt", "dir/big.bin", "dir/sub/b.txt"])
        head = json.loads(run("s3api", "head-object", "--bucket", "cli", "--key", "dir/big.bin"))
        self.assertTrue(head["ETag"].endswith('-2"'), head["ETag"])
        run("s3", "sync", "s3://cli/dir", str(back))
        self.assertEqual((back / "big.bin").read_bytes(), big)
        self.assertEqual((back / "sub" / "b.txt").read_bytes(), b"deep\n")
        self.assertEqual(run("s3", "sync", str(source), "s3://cli/dir").strip(), "")  # nothing changed
        run("s3", "rm", "--recursive", "s3://cli")
        run("s3", "rb", "s3://cli")
        self.assertEqual(json.loads(run("s3api", "list-buckets")).get("Buckets"), [])

    def test_rclone(self) -> None:
        rclone = shutil.which("rclone")
        if rclone is None:
            raise SkipTest("rclone is not installed")
        env = {name: value for name, value in os.environ.items() if name != "AWS_CA_BUNDLE"}
        env.update({"RCLONE_CONFIG": os.devnull, "RCLONE_CONFIG_TX_TYPE": "s3", "RCLONE_CONFIG_TX_PROVIDER": "Other",
                    "RCLONE_CONFIG_TX_ACCESS_KEY_ID": "test:tester", "RCLONE_CONFIG_TX_SECRET_ACCESS_KEY": "testing",
                    "RCLONE_CONFIG_TX_ENDPOINT": self.endpoint, "RCLONE_CONFIG_TX_REGION": "us-east-1"})

        def run(*args: str) -> str:
            done = subprocess.run([rclone, *args], env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(done.returncode, 0, done.stderr)
            return done.stdout + done.stderr

        source = Path(self.mktemp())
        (source / "sub").mkdir(parents=True)
        (source / "a.txt").write_bytes(b"hello\n")
        (source / "sub" / "b.txt").write_bytes(b"deep\n")
        (source / "big.bin").write_bytes(os.urandom(11 * 1024 * 1024))  # 3 parts of 5 MiB
        run("mkdir", "tx:rclone")
        run("sync", "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", str(source), "tx:rclone/dir")
        self.assertIn("0 differences found", run("check", str(source), "tx:rclone/dir"))
        self.assertIn("0 differences found", run("check", "--download", str(source), "tx:rclone/dir"))
        (source / "a.txt").write_bytes(b"changed\n")
        run("sync", str(source), "tx:rclone/dir")
        self.assertEqual(self.client().get_object(Bucket="rclone", Key="dir/a.txt")["Body"].read(), b"changed\n")
        run("purge", "tx:rclone")
        self.assertEqual(self.client().list_buckets()["Buckets"], [])

    def test_errors_and_refusals(self) -> None:
        s3 = self.client()
        self.assertEqual(self.code(s3.list_objects, Bucket="nothing"), (404, "NoSuchBucket"))
        s3.create_bucket(Bucket="errors")
        self.assertEqual(self.code(s3.get_object, Bucket="errors", Key="nothing"), (404, "NoSuchKey"))
        self.assertEqual(self.code(s3.create_bucket, Bucket="errors"), (409, "BucketAlreadyOwnedByYou"))
        self.assertEqual(self.code(s3.put_bucket_lifecycle_configuration, Bucket="errors",
                                   LifecycleConfiguration={"Rules": []}), (501, "NotImplemented"))
        self.assertEqual(self.code(s3.put_object, Bucket="errors", Key="k", Body=b"x", ACL="public-read"),
                         (501, "NotImplemented"))
        self.assertEqual(self.code(s3.put_object, Bucket="errors", Key="k", Body=b"x",
                                   ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg=="), (400, "BadDigest"))
        self.assertEqual(s3.list_objects(Bucket="errors").get("Contents"), None)
