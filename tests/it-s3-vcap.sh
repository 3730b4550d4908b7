#!/bin/bash
# it-s3-vcap.sh - Cloud Foundry: the S3 keys, bucket, region and endpoint
# and the database come only from VCAP_SERVICES (a bound S3 service and a
# bound PostgreSQL service, shaped as CF's brokers bind them), first in the
# environment as CF sets it, then from the app's .env file (--env-file).
# Proves: files arrive through the SigV4-verifying proxy and in
# PostgreSQL with nothing failed and nothing refused; the log names
# VCAP_SERVICES as the source and holds no secret; a wrong secret in
# VCAP_SERVICES is refused by the proxy (so the keys signing the requests
# really are VCAP's) and fails no entry.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-vcap
pg_start
s3_start
ob_setup

DB_URL=$DATABASE_URL
# vcap SECRET: a VCAP_SERVICES document for this test's servers
vcap() {
	node -e '
	const [ak, sk, bucket, region, endpoint, db] = process.argv.slice(1);
	console.log(JSON.stringify({
	  "s3": [{ label: "s3", provider: null, plan: "basic", name: "app-uploads",
	    tags: ["AWS", "S3", "object-storage"], instance_name: "app-uploads",
	    binding_name: null, volume_mounts: [],
	    credentials: { access_key_id: ak, secret_access_key: sk, bucket, region, endpoint } }],
	  "aws-rds": [{ label: "aws-rds", plan: "micro-psql", name: "app-db",
	    tags: ["database", "RDS", "postgresql"], volume_mounts: [],
	    credentials: { uri: db, db_name: "outboxd", host: "127.0.0.1" } }]
	}));' "$AWS_ACCESS_KEY_ID" "$1" "$S3_BUCKET" "$AWS_REGION" "$S3_PROXY_URL" "$DB_URL"
}
VCAP_GOOD=$(vcap "$AWS_SECRET_ACCESS_KEY")
VCAP_BAD=$(vcap "wrong/secret/key/for/the/proxy/000000000")
SECRET=$AWS_SECRET_ACCESS_KEY
WANT_S3="S3 leg: bucket $S3_BUCKET, region $AWS_REGION, endpoint $S3_PROXY_URL, path style"
# Nothing but VCAP_SERVICES tells outboxd where S3 and the database are
# (the harness's checks keep them, unexported).
export -n S3_BUCKET AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION DATABASE_URL
export AWS_EC2_METADATA_DISABLED=true HOME=$IT_DIR/home
mkdir -p "$HOME"

# 1. VCAP_SERVICES in the environment, as Cloud Foundry sets it
export VCAP_SERVICES=$VCAP_GOOD
t_ok "outboxd --check takes the configuration from VCAP_SERVICES alone" \
	bash -c '"$OUTBOXD" --check >"$IT_DIR/check.out" 2>&1'
t_ok "--check: VCAP's bucket, region and endpoint, path-style (not an AWS host)" \
	grep -qF "$WANT_S3" "$IT_DIR/check.out"
t_ok "--check: the database leg from VCAP_SERVICES" grep -q 'database leg: on (schema is_migration, from VCAP_SERVICES)' "$IT_DIR/check.out"
ob_start
for i in $(seq 1 12); do
	j=$(new_job)
	write_file "$j/orders/order-$i.xml" "<order id=\"$i\">$(head -c $((i * 53)) /dev/urandom | base64 -w0)</order>"
	write_file "$j/notes.txt" "job $i"
done
t_ok "all 24 files arrive" ob_wait_idle 30 24
t_is "$(ob_status failed)" 0 "none failed"
ob_check_s3
ob_check_db
t_is "$(s3_rejections)" 0 "the proxy refused nothing: every request signed with VCAP's keys for VCAP's region"
t_ok "the log names VCAP_SERVICES as the credentials' source" \
	grep -q 'S3 credentials from VCAP_SERVICES' "$IT_DIR/outboxd.log"
t_diag "$(grep -m1 'S3 credentials from' "$IT_DIR/outboxd.log")"
ob_stop

# 2. the app's .env file holds VCAP_SERVICES (cf local / the app's .env)
unset VCAP_SERVICES
printf "VCAP_SERVICES='%s'\n" "$VCAP_GOOD" >"$IT_DIR/app.env"
j=$(new_job)
write_file "$j/from-env-file.txt" "VCAP_SERVICES from the .env file"
touch -d '1 minute ago' "$UPLOADS/$j/from-env-file.txt"
t_ok "outboxd --once --env-file with VCAP_SERVICES in it stores the file" \
	bash -c '"$OUTBOXD" --once --env-file "$IT_DIR/app.env" >>"$IT_DIR/outboxd.log" 2>&1'
t_ok "its bytes are in S3" cmp -s "$UPLOADS/$j/from-env-file.txt" "$(s3_object_file "jobs/$j/uploads/from-env-file.txt")"
ob_check_db

# 3. a wrong secret in VCAP_SERVICES: the proxy refuses it, nothing fails
export VCAP_SERVICES=$VCAP_BAD
j=$(new_job)
write_file "$j/wrong-secret.txt" "signed with the wrong secret"
touch -d '1 minute ago' "$UPLOADS/$j/wrong-secret.txt"
rc=0
"$OUTBOXD" --once >>"$IT_DIR/outboxd.log" 2>&1 || rc=$?
t_is "$rc" 75 "--once stops with EX_TEMPFAIL when VCAP's secret is refused"
t_ok "the proxy refused the signature (SignatureDoesNotMatch)" \
	grep -q '"code":"SignatureDoesNotMatch"' "$IT_DIR/s3proxy-rejections.jsonl"
t_is "$(ob_status failed)" 0 "no entry failed"
t_ok "the file is still pending" test "$(ob_status pending)" -ge 1
s3_expect_rejections "$(s3_rejections)"
t_ok "no secret in the log" bash -c "! grep -q -e '$SECRET' -e 'wrong/secret/key' -e 'Signature=' '$IT_DIR/outboxd.log'"
t_done
