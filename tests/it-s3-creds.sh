#!/bin/bash
# it-s3-creds.sh - the credential chain against loopback fakes of AWS's
# services (tests/awsfakes.js): IMDSv2, the container endpoint, STS
# AssumeRole (its SigV4 signature verified) and AssumeRoleWithWebIdentity.
# The fakes issue keys living a few seconds that the verifying S3 proxy
# takes only until they expire (ExpiredToken after). Proves: each provider
# alone stores files and is named in the log (never a secret); the chain's
# order; temporary keys refreshed before they expire during a steady
# stream of files with nothing failed and nothing refused; a request that
# meets ExpiredToken (the endpoint lied about the expiry) refreshes and is
# retried, nothing failed. The refresh during a stream runs for every
# provider of temporary keys: IMDS, credential_process, STS AssumeRole and
# AssumeRoleWithWebIdentity (the container endpoint's refetch after
# ExpiredToken is case 11).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/ob.sh"
it_init s3-creds
s3_start
ob_setup

S3_AK=$AWS_ACCESS_KEY_ID
S3_SK=$AWS_SECRET_ACCESS_KEY
ROLE_ARN=arn:aws:iam::111122223333:role/outboxd-test
BASE_AK=AKIDBASEEXAMPLE00001
BASE_SK=base/secret/key/not/known/to/s3/0000000
WEB_TOKEN=eyJhbGciOiJSUzI1NiJ9.outboxd-test-web-identity.sig
CONTAINER_TOKEN=container-auth-token-0123456789
export HOME=$IT_DIR/home
mkdir -p "$HOME"
printf '%s' "$WEB_TOKEN" >"$IT_DIR/web-token"
printf '%s\n' "$CONTAINER_TOKEN" >"$IT_DIR/container-token"

# fakes_start LIFETIME_S [CLAIM_EXTRA_S]
fakes_start() {
	rm -f "$IT_DIR/awsfakes.port"
	_it_detach "$IT_DIR/.awsfakes.pid" "$IT_DIR/awsfakes.out" \
		env OUTBOXD_NODE_MODULES="$NODE_MODULES" node "$abs_top_srcdir/tests/awsfakes.js" \
		--listen 127.0.0.1:0 --port-file "$IT_DIR/awsfakes.port" --proxy "$S3_PROXY_URL" \
		--lifetime "$1" --claim-extra "${2:-0}" --log "$IT_DIR/issued.jsonl" --region "$AWS_REGION" \
		--base-access-key "$BASE_AK" --base-secret-key "$BASE_SK" --role-arn "$ROLE_ARN" \
		--web-token "$WEB_TOKEN" --container-token "$CONTAINER_TOKEN"
	FAKES_PID=$(cat "$IT_DIR/.awsfakes.pid")
	it_track "$FAKES_PID"
	wait_for 15 test -s "$IT_DIR/awsfakes.port" || t_bail "awsfakes did not start"
	FAKES=http://127.0.0.1:$(cat "$IT_DIR/awsfakes.port")
}
fakes_stop() { it_stop "$FAKES_PID" TERM 5 || true; }

# Nothing of the chain but what a case sets.
chain_clear() {
	unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE \
		AWS_SHARED_CREDENTIALS_FILE AWS_CONFIG_FILE AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN \
		AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_AUTHORIZATION_TOKEN \
		AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE AWS_EC2_METADATA_SERVICE_ENDPOINT \
		AWS_ENDPOINT_URL_STS
	export AWS_EC2_METADATA_DISABLED=true
	rm -rf "$HOME/.aws"
}

j=$(new_job)
n=0
# once CASE: a new file, outboxd --once; the file must be stored
once() {
	n=$((n + 1))
	write_file "$j/$1.txt" "stored with credentials from $1"
	touch -d '1 minute ago' "$UPLOADS/$j/$1.txt"
	echo "--- case $1" >>"$IT_DIR/outboxd.log"
	local rc=0
	"$OUTBOXD" --once >>"$IT_DIR/outboxd.log" 2>&1 || rc=$?
	[ "$rc" = 0 ] && cmp -s "$UPLOADS/$j/$1.txt" "$(s3_object_file "jobs/$j/uploads/$1.txt")"
}
# provider_line CASE: the "S3 credentials from" line of that case's run
provider_line() {
	awk -v c="--- case $1" '$0 == c { on = 1; next } /^--- case / { on = 0 } on && /S3 credentials from/' \
		"$IT_DIR/outboxd.log" | head -1
}
issued() { grep -c "\"provider\":\"$1\"" "$IT_DIR/issued.jsonl" 2>/dev/null || true; }

fakes_start 900

# 1. the environment
chain_clear
export AWS_ACCESS_KEY_ID=$S3_AK AWS_SECRET_ACCESS_KEY=$S3_SK
t_ok "environment keys store a file" once env
t_ok "the log names the environment" bash -c "grep -q 'S3 credentials from environment' <<<'$(provider_line env)'"

# 2. a profile's static keys
chain_clear
mkdir -p "$HOME/.aws"
printf '[default]\naws_access_key_id = nope\naws_secret_access_key = nope\n\n[dev]\naws_access_key_id = %s\naws_secret_access_key = %s\n' \
	"$S3_AK" "$S3_SK" >"$HOME/.aws/credentials"
export AWS_PROFILE=dev
t_ok "AWS_PROFILE with ~/.aws/credentials stores a file" once profile-static
t_ok "the log names the profile" bash -c "grep -q 'profile dev (static keys)' <<<'$(provider_line profile-static)'"

# 3. credential_process (AWS_CONFIG_FILE), run again before its expiry
chain_clear
cat >"$IT_DIR/cred-process.sh" <<EOF
#!/bin/sh
echo run >>"$IT_DIR/cred-process.runs"
printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "Expiration": "%s"}\n' \
	"$S3_AK" "$S3_SK" "\$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
EOF
chmod +x "$IT_DIR/cred-process.sh"
printf '[profile proc]\ncredential_process = %s\n' "$IT_DIR/cred-process.sh" >"$IT_DIR/aws-config"
export AWS_CONFIG_FILE=$IT_DIR/aws-config AWS_PROFILE=proc
t_ok "credential_process stores a file" once process
t_ok "the log names credential_process" bash -c "grep -q 'profile proc (credential_process)' <<<'$(provider_line process)'"

# role_profile: a profile "role" (role_arn + source_profile "base", the
# base keys in the credentials file), STS at the fakes
role_profile() {
	chain_clear
	mkdir -p "$HOME/.aws"
	printf '[base]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$BASE_AK" "$BASE_SK" \
		>"$HOME/.aws/credentials"
	printf '[profile role]\nrole_arn = %s\nsource_profile = base\n' "$ROLE_ARN" >"$HOME/.aws/config"
	export AWS_PROFILE=role AWS_ENDPOINT_URL_STS=$FAKES
}

# 4. role_arn + source_profile: STS AssumeRole signed with the base keys
role_profile
before=$(issued sts-assume-role)
t_ok "role_arn + source_profile (STS AssumeRole) stores a file" once assume-role
t_is "$(issued sts-assume-role)" $((before + 1)) "STS issued the keys (it verified the SigV4 signature)"
t_ok "the log names the role and its source" bash -c "grep -q 'profile role (role $ROLE_ARN, assumed with profile base (static keys))' <<<'$(provider_line assume-role)'"

# 5. role_arn + web_identity_token_file in a profile
chain_clear
mkdir -p "$HOME/.aws"
printf '[profile web]\nrole_arn = %s\nweb_identity_token_file = %s\n' "$ROLE_ARN" "$IT_DIR/web-token" \
	>"$HOME/.aws/config"
export AWS_PROFILE=web AWS_ENDPOINT_URL_STS=$FAKES
t_ok "a profile's web_identity_token_file stores a file" once profile-web
t_ok "the log names it" bash -c "grep -q 'profile web (web identity' <<<'$(provider_line profile-web)'"

# 6. web identity from the environment (EKS IRSA)
chain_clear
export AWS_WEB_IDENTITY_TOKEN_FILE=$IT_DIR/web-token AWS_ROLE_ARN=$ROLE_ARN AWS_ENDPOINT_URL_STS=$FAKES
before=$(issued sts-web-identity)
t_ok "AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN stores a file" once web-identity
t_is "$(issued sts-web-identity)" $((before + 1)) "STS AssumeRoleWithWebIdentity issued the keys"
t_ok "the log names web identity" bash -c "grep -q 'web identity (role $ROLE_ARN' <<<'$(provider_line web-identity)'"

# 7. the container endpoint with its authorization token file
chain_clear
export AWS_CONTAINER_CREDENTIALS_FULL_URI=$FAKES/container/creds
export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=$IT_DIR/container-token
t_ok "the container endpoint stores a file" once container
t_ok "the log names the container endpoint" bash -c "grep -q 'the container credentials endpoint' <<<'$(provider_line container)'"

# 8. IMDSv2
chain_clear
unset AWS_EC2_METADATA_DISABLED
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$FAKES
t_ok "IMDSv2 stores a file" once imds
t_ok "the log names IMDSv2" bash -c "grep -q 'instance metadata service (IMDSv2)' <<<'$(provider_line imds)'"
t_is "$(curl -sf "$FAKES/__fakes/stats" | node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>console.log(JSON.parse(d).refused.imds||0))')" 0 \
	"IMDS saw no request without its session token"

# 9. the chain's order: the environment before a profile; a profile
# before web identity; the container endpoint before IMDS
chain_clear
export AWS_ACCESS_KEY_ID=$S3_AK AWS_SECRET_ACCESS_KEY=$S3_SK AWS_PROFILE=role AWS_ENDPOINT_URL_STS=$FAKES
mkdir -p "$HOME/.aws"
printf '[profile role]\nrole_arn = %s\ncredential_source = Environment\n' "$ROLE_ARN" >"$HOME/.aws/config"
t_ok "order: keys and a profile" once order-env
t_ok "the environment wins over AWS_PROFILE" bash -c "grep -q 'from environment ' <<<'$(provider_line order-env)'"
chain_clear
mkdir -p "$HOME/.aws"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$S3_AK" "$S3_SK" >"$HOME/.aws/credentials"
export AWS_WEB_IDENTITY_TOKEN_FILE=$IT_DIR/web-token AWS_ROLE_ARN=$ROLE_ARN AWS_ENDPOINT_URL_STS=$FAKES
t_ok "order: a default profile and web identity" once order-profile
t_ok "the default profile wins over web identity" bash -c "grep -q 'profile default' <<<'$(provider_line order-profile)'"
chain_clear
unset AWS_EC2_METADATA_DISABLED
export AWS_CONTAINER_CREDENTIALS_FULL_URI=$FAKES/container/creds AWS_CONTAINER_AUTHORIZATION_TOKEN=$CONTAINER_TOKEN
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$FAKES
t_ok "order: the container endpoint and IMDS" once order-container
t_ok "the container endpoint wins over IMDS" bash -c "grep -q 'container credentials endpoint' <<<'$(provider_line order-container)'"

t_ok "no secret, token or signature in the log" bash -c \
	"! grep -q -e '$S3_SK' -e '$BASE_SK' -e '$WEB_TOKEN' -e '$CONTAINER_TOKEN' -e 'IQoJb3JpZ2lu' -e 'Signature=' '$IT_DIR/outboxd.log'"
fakes_stop

# 10. refresh during a steady stream: keys that live 6 s, a file every
# 0.2 s for 14 s; every one arrives, none fails, S3 refuses nothing
: >"$IT_DIR/issued.jsonl"
fakes_start 6
chain_clear
unset AWS_EC2_METADATA_DISABLED
export AWS_EC2_METADATA_SERVICE_ENDPOINT=$FAKES
ob_start
for i in $(seq 1 70); do
	write_file "$j/stream/f-$i.txt" "file $i of a steady stream"
	sleep 0.2
done
t_ok "all files of the stream arrive" ob_wait_idle 30 $((n + 70))
t_is "$(ob_status failed)" 0 "none failed"
t_ok "the keys were refreshed at least twice (6 s keys over 14 s)" \
	test "$(grep -c 'S3 credentials refreshed from' "$IT_DIR/outboxd.log")" -ge 2
t_ok "IMDS issued a new set for each refresh" test "$(issued imds)" -ge 3
t_is "$(s3_rejections)" 0 "S3 refused nothing: every request was signed with unexpired keys"
ob_stop
n=$((n + 70))

# stream CASE PROVIDER: with the chain as the case set it, outboxd runs
# while 40 files come 0.2 s apart (8 s; the keys live 6 s, so they are
# refreshed at least twice, at half their life); every file arrives, none
# fails, S3 refuses nothing, and the provider issued a set per refresh
stream() {
	local c=$1 before
	before=$(issued "$2")
	echo "--- case $c" >>"$IT_DIR/outboxd.log"
	ob_start
	for i in $(seq 1 40); do
		write_file "$j/$c/f-$i.txt" "file $i of a steady stream ($c)"
		sleep 0.2
	done
	n=$((n + 40))
	t_ok "$c: all 40 files of the stream arrive" ob_wait_idle 30 "$n"
	t_is "$(ob_status failed)" 0 "$c: none failed"
	t_ok "$c: the keys were refreshed at least twice" \
		test "$(case_lines "$c" 'S3 credentials refreshed from' | wc -l)" -ge 2
	t_ok "$c: the provider issued a new set for each refresh" test "$(($(issued "$2") - before))" -ge 3
	t_is "$(s3_rejections)" 0 "$c: S3 refused nothing"
	ob_stop
	t_diag "$c: $(case_lines "$c" 'S3 credentials refreshed from' | wc -l) refreshes, $(($(issued "$2") - before)) sets issued"
	t_diag "$c: $(case_lines "$c" 'S3 credentials from' | head -1)"
	t_diag "$c: $(case_lines "$c" 'S3 credentials refreshed from' | head -1)"
}
# case_lines CASE TEXT: the log lines of that case holding TEXT
case_lines() {
	awk -v c="--- case $1" -v p="$2" '$0 == c { on = 1; next } /^--- case / { on = 0 }
		on && index($0, p)' "$IT_DIR/outboxd.log"
}

# 10b. a credential_process that issues short-lived keys itself (as
# aws-vault or a vault agent does): registered with the proxy, 6 s life
chain_clear
cat >"$IT_DIR/cred-short.sh" <<EOF
#!/bin/sh
# New keys for 6 s, known to the S3 proxy before they are printed.
set -e
u() { tr -d - </proc/sys/kernel/random/uuid; }
ak=ASIA\$(u | tr a-f0-9 A-P | cut -c1-16)
sk=\$(u)\$(u | cut -c1-8)
tok=IQoJb3JpZ2luX2Vj\$(u)\$(u)
exp=\$((\$(date +%s) + 6))
curl -sf --noproxy '*' -o /dev/null -H 'Content-Type: application/json' \\
	-d "{\\"access_key\\": \\"\$ak\\", \\"secret_key\\": \\"\$sk\\", \\"token\\": \\"\$tok\\", \\"expires_ms\\": \$((exp * 1000))}" \\
	"$S3_PROXY_URL/__proxy/creds"
echo '{"provider":"process"}' >>"$IT_DIR/issued.jsonl"
printf '{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "SessionToken": "%s", "Expiration": "%s"}\n' \\
	"\$ak" "\$sk" "\$tok" "\$(date -u -d "@\$exp" +%Y-%m-%dT%H:%M:%SZ)"
EOF
chmod +x "$IT_DIR/cred-short.sh"
printf '[profile short]\ncredential_process = %s\n' "$IT_DIR/cred-short.sh" >"$IT_DIR/aws-config"
export AWS_CONFIG_FILE=$IT_DIR/aws-config AWS_PROFILE=short
stream process-refresh process

# 10c. role_arn + source_profile: STS AssumeRole, each refresh signed
# again with the base keys (the fake STS verifies every signature)
role_profile
stream assume-role-refresh sts-assume-role

# 10d. web identity (EKS IRSA): AssumeRoleWithWebIdentity again per refresh
chain_clear
export AWS_WEB_IDENTITY_TOKEN_FILE=$IT_DIR/web-token AWS_ROLE_ARN=$ROLE_ARN AWS_ENDPOINT_URL_STS=$FAKES
stream web-identity-refresh sts-web-identity
t_is "$(curl -sf "$FAKES/__fakes/stats" | node -e 'let d="";process.stdin.on("data",c=>d+=c).on("end",()=>console.log(JSON.parse(d).refused.sts||0))')" 0 \
	"STS refused no request (every AssumeRole signature verified)"
t_ok "no secret, token or signature in the log after the refreshes" bash -c \
	"! grep -q -e '$BASE_SK' -e '$WEB_TOKEN' -e 'IQoJb3JpZ2lu' -e 'Signature=' '$IT_DIR/outboxd.log'"
fakes_stop

# 11. ExpiredToken: the endpoint says its keys live 60 s longer than they
# do; a request meets ExpiredToken, outboxd refreshes and retries
: >"$IT_DIR/issued.jsonl"
fakes_start 4 60
chain_clear
export AWS_CONTAINER_CREDENTIALS_FULL_URI=$FAKES/container/creds AWS_CONTAINER_AUTHORIZATION_TOKEN=$CONTAINER_TOKEN
ob_start
write_file "$j/expired/first.txt" "before the keys expire"
t_ok "the first file arrives" ob_wait_idle 20 $((n + 1))
sleep 5	# the keys have expired now, though outboxd was told they live on
for i in 1 2 3; do write_file "$j/expired/after-$i.txt" "after the keys expired $i"; done
t_ok "files sent after the keys expired arrive" ob_wait_idle 30 $((n + 4))
t_is "$(ob_status failed)" 0 "none failed"
t_ok "S3 answered ExpiredToken" test "$(s3_rejections)" -ge 1
only_expired() { node -e '
	const l = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter(Boolean);
	process.exit(l.every(x => JSON.parse(x).code === "ExpiredToken") ? 0 : 1);' \
	"$IT_DIR/s3proxy-rejections.jsonl"; }
t_ok "every refusal was ExpiredToken" only_expired
t_ok "outboxd fetched new keys after it" test "$(issued container)" -ge 2
s3_expect_rejections "$(s3_rejections)"
ob_stop
fakes_stop
t_done
