# shellcheck shell=bash disable=SC2034 # the variables set here are used by the scripts that source it
# Shared by create-world.sh and destroy-world.sh; sourced, not run.
#
# Reads and validates the parameters (before any AWS call), derives every
# resource name and ARN from them, and wraps the AWS CLI.
#
# Conventions: stdout carries exactly one line per resource ("<state> <kind>
# <name>"); everything else (progress, what changed, errors) goes to stderr.

# Services whose policies create-world.sh manages. Build Pods are deliberately
# absent: they get no IAM policy and no AWS credentials at all, only presigned
# PUT URLs for their own two objects (see README.md, "IAM design").
DECAP_SERVICES=(ingest dispatcher reaper)

# The builds table's global secondary indexes, "name:hash:range[:projection]",
# projection ALL unless given (outbox: KEYS_ONLY, the build events' sparse
# outbox index, whose items the forwarder reads by key). The Go adapter
# (internal/awsdynamo) queries these exact names and keys.
BUILDS_INDEXES=(by-project:projectKey:queuedSort running:runningPk:buildId projects:kind:buildId unfinished:unfinishedKey:queuedSort
  outbox:outboxShard:outboxSort:KEYS_ONLY)

# The consumer groups of the build events that Decap's services read, each an
# SQS FIFO queue <prefix>-events-<group>.fifo subscribed to the events' SNS
# FIFO topic with raw delivery (internal/awsevents QueueName).
EVENT_GROUPS=(github-statuses webhooks)

die() { echo "${0##*/}: $*" >&2; exit 1; }
note() { echo "${0##*/}: $*" >&2; }

# report STATE KIND NAME prints the one stdout line for a resource.
report() { printf '%-8s %-15s %s\n' "$1" "$2" "$3"; }

# load_config validates the parameters and sets the names and ARNs that do not
# depend on the account. It fails before any AWS call, so a bad parameter
# creates (or deletes) nothing.
load_config() {
  DECAP_PREFIX=${DECAP_PREFIX:-decap}
  if ! [[ $DECAP_PREFIX =~ ^[a-z0-9-]{3,40}$ ]]; then
    die "invalid DECAP_PREFIX \"$DECAP_PREFIX\": use 3-40 lowercase letters, digits and hyphens"
  fi
  # S3 bucket names must start with a letter or digit and may not start with
  # xn-- or sthree-; the bucket is "<prefix>-builds", so check that here too.
  if [[ $DECAP_PREFIX == -* || $DECAP_PREFIX == xn--* || $DECAP_PREFIX == sthree-* ]]; then
    die "invalid DECAP_PREFIX \"$DECAP_PREFIX\": it must not start with a hyphen, xn-- or sthree- (S3 bucket naming rules)"
  fi

  AWS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
  if ! [[ $AWS_REGION =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]]; then
    die "invalid AWS_REGION \"$AWS_REGION\" (expected e.g. us-east-1)"
  fi
  if [ -n "${AWS_ENDPOINT_URL:-}" ] && ! [[ $AWS_ENDPOINT_URL =~ ^https?:// ]]; then
    die "invalid AWS_ENDPOINT_URL \"$AWS_ENDPOINT_URL\" (expected http://host:port or https://...)"
  fi

  DECAP_RETENTION_DAYS=${DECAP_RETENTION_DAYS:-90}
  if ! [[ $DECAP_RETENTION_DAYS =~ ^[1-9][0-9]{0,4}$ ]]; then
    die "invalid DECAP_RETENTION_DAYS \"$DECAP_RETENTION_DAYS\": a whole number of days, at least 1"
  fi

  BUCKET=${DECAP_BUCKET:-$DECAP_PREFIX-builds}
  if ! [[ $BUCKET =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || [[ $BUCKET == *..* ]]; then
    die "invalid DECAP_BUCKET \"$BUCKET\": 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit"
  fi

  QUEUE=$DECAP_PREFIX-builds.fifo
  DLQ=$DECAP_PREFIX-builds-dlq.fifo
  LOCKS_TABLE=$DECAP_PREFIX-locks
  IDEMPOTENCY_TABLE=$DECAP_PREFIX-idempotency
  BUILDS_TABLE=$DECAP_PREFIX-builds
  SESSIONS_TABLE=$DECAP_PREFIX-sessions
  TOPIC=$DECAP_PREFIX-build-events.fifo
  TAIL_QUEUE_PREFIX=$DECAP_PREFIX-tail-
  EVENT_QUEUES=()
  local g
  for g in "${EVENT_GROUPS[@]}"; do EVENT_QUEUES+=("$DECAP_PREFIX-events-$g.fifo"); done

  ENDPOINT_ARGS=()
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then ENDPOINT_ARGS=(--endpoint-url "$AWS_ENDPOINT_URL"); fi
  export AWS_PAGER="" # AWS CLI v2 would otherwise page long answers

  command -v aws >/dev/null || die "the AWS CLI (aws) is not on PATH"
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/decap-world.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
}

# aws_account asks STS who we are and sets the account-dependent ARNs.
aws_account() {
  local out caller_arn
  out=$(awscli sts get-caller-identity --query '[Account, Arn]' --output text) ||
    die "cannot reach AWS (sts get-caller-identity failed): check credentials, AWS_REGION and AWS_ENDPOINT_URL"
  read -r ACCOUNT caller_arn <<<"$out"
  PARTITION=$(cut -d: -f2 <<<"$caller_arn") # aws, aws-cn or aws-us-gov
  [[ $ACCOUNT =~ ^[0-9]{12}$ && -n $PARTITION ]] || die "unexpected sts get-caller-identity answer: $out"

  QUEUE_ARN=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT:$QUEUE
  DLQ_ARN=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT:$DLQ
  LOCKS_TABLE_ARN=arn:$PARTITION:dynamodb:$AWS_REGION:$ACCOUNT:table/$LOCKS_TABLE
  IDEMPOTENCY_TABLE_ARN=arn:$PARTITION:dynamodb:$AWS_REGION:$ACCOUNT:table/$IDEMPOTENCY_TABLE
  BUILDS_TABLE_ARN=arn:$PARTITION:dynamodb:$AWS_REGION:$ACCOUNT:table/$BUILDS_TABLE
  SESSIONS_TABLE_ARN=arn:$PARTITION:dynamodb:$AWS_REGION:$ACCOUNT:table/$SESSIONS_TABLE
  BUCKET_ARN=arn:$PARTITION:s3:::$BUCKET
  TOPIC_ARN=arn:$PARTITION:sns:$AWS_REGION:$ACCOUNT:$TOPIC
  # The events queues' ARNs are this and "-<group>.fifo".
  EVENTS_QUEUE_ARN_PREFIX=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT:$DECAP_PREFIX-events
  # The live tail's queues, one per ingest process that tails (made and
  # deleted by ingest, internal/awsevents tail.go): "$TAIL_QUEUE_PREFIX", 16
  # hex digits, ".fifo". The ARN pattern matches exactly that shape.
  TAIL_QUEUE_ARN_PATTERN=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT:$TAIL_QUEUE_PREFIX????????????????.fifo
  # Secrets Manager adds a random suffix to every secret's ARN, so the
  # policies name the builds' secrets by this prefix and a wildcard.
  SECRETS_ARN_PREFIX=arn:$PARTITION:secretsmanager:$AWS_REGION:$ACCOUNT:secret:$DECAP_PREFIX
  POLICY_ARN_PREFIX=arn:$PARTITION:iam::$ACCOUNT:policy
}

# read_policies reads the three policies in one call (an AWS CLI call costs
# half a second of CPU) and sets, for each that exists, by ARN:
# POLICY_DOCUMENT (the default version's document, compact JSON),
# POLICY_ATTACHMENTS (how many roles, users and groups have it) and
# POLICY_OLDER_VERSIONS (the non-default version IDs, oldest first). Running
# the scripts therefore needs iam:GetAccountAuthorizationDetails.
read_policies() {
  declare -gA POLICY_DOCUMENT=() POLICY_ATTACHMENTS=() POLICY_OLDER_VERSIONS=()
  local svc filter="" arn attachments older document
  for svc in "${DECAP_SERVICES[@]}"; do
    filter+="${filter:+ || }Arn == '$POLICY_ARN_PREFIX/$DECAP_PREFIX-$svc'"
  done
  # PolicyName is not used: moto leaves it out of this answer.
  awscli iam get-account-authorization-details --filter LocalManagedPolicy --output text --query \
    "Policies[?$filter].[Arn, to_string(AttachmentCount), join(' ', sort_by(PolicyVersionList[?!IsDefaultVersion], &CreateDate)[].VersionId) || '-', to_string(PolicyVersionList[?IsDefaultVersion] | [0].Document)]" \
    >"$WORK/policies.$BASHPID"
  while IFS=$'\t' read -r arn attachments older document; do
    [ -n "$arn" ] || continue
    POLICY_DOCUMENT[$arn]=$document
    POLICY_ATTACHMENTS[$arn]=$attachments
    POLICY_OLDER_VERSIONS[$arn]=${older#-}
  done <"$WORK/policies.$BASHPID"
}

# awscli runs the AWS CLI against the configured region and endpoint.
awscli() {
  aws ${ENDPOINT_ARGS[@]+"${ENDPOINT_ARGS[@]}"} --region "$AWS_REGION" "$@"
}

# aws_try MISSING_RE ARGS... runs "awscli ARGS". On success it returns 0 with
# the command's stdout in $OUT (and its stderr in $ERR). When the call fails with an error matching the
# extended regex MISSING_RE (the resource does not exist) it returns 1. Any
# other failure prints the CLI's error and exits. Call it directly (in an if),
# never inside $(...), so that the exit ends the script.
aws_try() {
  local missing=$1 rc=0
  shift
  local out=$WORK/out.$BASHPID err=$WORK/err.$BASHPID
  awscli "$@" >"$out" 2>"$err" || rc=$?
  OUT=$(<"$out")
  ERR=$(<"$err")
  if ((rc == 0)); then return 0; fi
  if grep -Eq -- "$missing" "$err"; then return 1; fi
  cat "$err" >&2
  die "aws $1 $2 failed (exit $rc)"
}

# wait_table_active NAME waits until the table and all its indexes are ACTIVE
# (TTL and PITR can only be changed then). Moto is ACTIVE at once; AWS takes
# seconds to minutes, longer for a new index on a big table.
wait_table_active() {
  local name=$1 status waited=0
  while :; do
    status=$(awscli dynamodb describe-table --table-name "$name" \
      --query "[Table.TableStatus, (Table.GlobalSecondaryIndexes || \`[]\`)[].IndexStatus][]" --output text)
    [[ $status =~ ^(ACTIVE[[:space:]]*)+$ ]] && return 0
    if ((waited >= 1800)); then die "table $name is still not ACTIVE after 30 minutes: $status"; fi
    if ((waited % 30 == 0)); then note "waiting for table $name to become ACTIVE ($status)"; fi
    sleep 3
    waited=$((waited + 3))
  done
}

# json_str S prints S as a JSON string literal.
json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

# run_parallel FN... runs each function in its own background subshell, then
# prints their stdout in the order given, each as soon as it and those before
# it are done. Returns non-zero when any of them failed. The calls are
# independent (every ARN is derived, not looked up), and most of the time is
# spent starting the AWS CLI or waiting for AWS, so this roughly halves the run
# time even on two cores.
run_parallel() {
  local fn pids=() failed=() i=0
  for fn in "$@"; do
    ("$fn") >"$WORK/$fn.stdout" &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
  for fn in "$@"; do
    if ! wait "${pids[i]}"; then failed+=("$fn"); fi
    cat "$WORK/$fn.stdout"
    i=$((i + 1))
  done
  trap - INT TERM
  if ((${#failed[@]})); then
    note "failed: ${failed[*]} (see the errors above; it is safe to run again)"
    return 1
  fi
}
