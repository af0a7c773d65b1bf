#!/usr/bin/env bash
# Deletes everything create-world.sh creates for one DECAP_PREFIX: both
# queues, the build events' topic (with every subscription to it, also other
# systems') and its queues (and live-tail queues an ingest left), the four
# tables, the bucket with every object version, the three IAM policies; and
# the builds' secrets the API wrote into Secrets Manager under <prefix>/
# (deleted without a recovery window). Same parameters as create-world.sh
# (DECAP_PREFIX, AWS_REGION, AWS_ENDPOINT_URL, DECAP_BUCKET).
#
#   aws-resources/destroy-world.sh [--yes]
#
# Asks for confirmation (type the prefix) unless --yes is given or CI=true.
# One stdout line per resource: "deleted", "absent" (already gone: running it
# again is fine) or "kept". It deletes only what create-world.sh creates, by
# name, and detaches nothing: a policy someone attached to a role, user or
# group is kept, with the commands to detach it printed, and the script fails.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=aws-resources/lib.sh
. ./lib.sh

yes=false
for arg; do
  case $arg in
  --yes | -y) yes=true ;;
  -h | --help)
    sed -n '2,16p' "${0##*/}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown argument \"$arg\" (usage: destroy-world.sh [--yes])" ;;
  esac
done
if [ "${CI:-}" = true ]; then yes=true; fi

load_config
aws_account

if ! $yes; then
  if ! [ -t 0 ]; then
    die "refusing to delete without confirmation: pass --yes (or set CI=true), or run it in a terminal"
  fi
  {
    echo "This deletes, in account $ACCOUNT, region $AWS_REGION${AWS_ENDPOINT_URL:+ (endpoint $AWS_ENDPOINT_URL)}:"
    echo "  SQS queues      $QUEUE $DLQ ${EVENT_QUEUES[*]} ${TAIL_QUEUE_PREFIX}<16 hex digits>.fifo (and any messages in them)"
    echo "  SNS topic       $TOPIC (and every subscription to it)"
    echo "  DynamoDB tables $LOCKS_TABLE $IDEMPOTENCY_TABLE $BUILDS_TABLE (all build history) $SESSIONS_TABLE"
    echo "  S3 bucket       $BUCKET (every log and artifact, every version)"
    echo "  Secrets Manager every secret named $DECAP_PREFIX/... (the builds' secrets, without recovery)"
    echo "  IAM policies    ${DECAP_SERVICES[*]/#/$DECAP_PREFIX-}"
  } >&2
  read -r -p "Type the prefix \"$DECAP_PREFIX\" to delete all of it: " answer
  [ "$answer" = "$DECAP_PREFIX" ] || die "not confirmed; nothing deleted"
fi

delete_queue() {
  local name=$1
  if ! aws_try 'NonExistentQueue|QueueDoesNotExist' sqs get-queue-url --queue-name "$name" --query QueueUrl --output text; then
    report absent sqs-queue "$name"
    return
  fi
  # A queue that is gone may still answer for up to 60 s on AWS, and its name
  # cannot be reused during that time.
  if ! aws_try 'NonExistentQueue|QueueDoesNotExist' sqs delete-queue --queue-url "$OUT"; then
    report absent sqs-queue "$name"
    return
  fi
  report deleted sqs-queue "$name"
}

# The main queue first, so nothing is redriven into a DLQ that is going away.
queues() {
  delete_queue "$QUEUE"
  delete_queue "$DLQ"
}

# build_events deletes the topic (AWS deletes its subscriptions with it), then
# the consumer groups' queues. DeleteTopic succeeds for a topic that is not
# there, so the topic is looked up first.
build_events() {
  local queue
  if aws_try 'NotFound|does not exist' sns get-topic-attributes --topic-arn "$TOPIC_ARN" --query Attributes.TopicArn --output text; then
    awscli sns delete-topic --topic-arn "$TOPIC_ARN"
    report deleted sns-topic "$TOPIC"
  else
    report absent sns-topic "$TOPIC"
  fi
  for queue in "${EVENT_QUEUES[@]}"; do delete_queue "$queue"; done
  tail_queues
}

# tail_queues deletes the live tail's queues an ingest process left (killed
# before it deleted its own; ingest sweeps them too): exactly
# <prefix>-tail-<16 hex digits>.fifo, nothing else that starts the same.
# Each is reported only when there is one.
tail_queues() {
  local url name
  OUT=$(awscli sqs list-queues --queue-name-prefix "$TAIL_QUEUE_PREFIX" --query 'QueueUrls[]' --output text)
  for url in $OUT; do
    [ "$url" != None ] || continue
    name=${url##*/}
    [[ $name =~ ^${TAIL_QUEUE_PREFIX}[0-9a-f]{16}\.fifo$ ]] || continue
    if aws_try 'NonExistentQueue|QueueDoesNotExist' sqs delete-queue --queue-url "$url"; then
      report deleted sqs-queue "$name"
    fi
  done
}

delete_table() {
  local name=$1 waited=0
  # DeleteTable refuses a table being created or updated (ResourceInUse):
  # wait until it is ACTIVE and try again. One being deleted is fine too.
  until aws_try 'ResourceNotFoundException|ResourceInUseException' dynamodb delete-table --table-name "$name" \
    --query TableDescription.TableStatus --output text; do
    if [[ $ERR == *ResourceNotFoundException* ]]; then
      report absent dynamodb-table "$name"
      return
    fi
    if [[ $ERR == *"being deleted"* ]]; then break; fi
    note "$name is busy ($ERR); waiting for it to become ACTIVE"
    wait_table_active "$name"
  done
  # Wait until it is gone, so that create-world.sh can run right after.
  while aws_try 'ResourceNotFoundException' dynamodb describe-table --table-name "$name" --query Table.TableStatus --output text; do
    if ((waited >= 600)); then die "table $name is still $OUT after 10 minutes"; fi
    if ((waited % 30 == 0)); then note "waiting for table $name to be deleted ($OUT)"; fi
    sleep 3
    waited=$((waited + 3))
  done
  report deleted dynamodb-table "$name"
}

locks_table() { delete_table "$LOCKS_TABLE"; }
idempotency_table() { delete_table "$IDEMPOTENCY_TABLE"; }
builds_table() { delete_table "$BUILDS_TABLE"; }
sessions_table() { delete_table "$SESSIONS_TABLE"; }

# bucket empties the bucket (unfinished multipart uploads, every object
# version and delete marker, 1000 at a time) and deletes it.
bucket() {
  # The first call also tells whether the bucket is there and ours.
  if ! aws_try 'NoSuchBucket|AccessDenied' s3api list-multipart-uploads --bucket "$BUCKET" \
    --expected-bucket-owner "$ACCOUNT" --query 'Uploads[].[Key, UploadId]' --output text; then
    if [[ $ERR == *AccessDenied* ]]; then
      die "bucket $BUCKET belongs to another account (or these credentials may not list it); not touching it"
    fi
    report absent s3-bucket "$BUCKET"
    return
  fi
  local key upload n=0
  while IFS=$'\t' read -r key upload; do
    [ -n "$upload" ] || continue
    awscli s3api abort-multipart-upload --bucket "$BUCKET" --key "$key" --upload-id "$upload"
  done <<<"$OUT"

  local batch=$WORK/delete-batch.json errors
  while :; do
    # shellcheck disable=SC2016 # `true` is a JMESPath literal
    awscli s3api list-object-versions --bucket "$BUCKET" --no-paginate --max-keys 1000 --output json \
      --query '{Objects: [Versions[].{Key: Key, VersionId: VersionId}, DeleteMarkers[].{Key: Key, VersionId: VersionId}][], Quiet: `true`}' >"$batch"
    grep -q '"Key"' "$batch" || break
    errors=$(awscli s3api delete-objects --bucket "$BUCKET" --delete "file://$batch" \
      --query 'Errors[0:3].[Key, Code, Message]' --output text)
    if [ -n "$errors" ] && [ "$errors" != None ]; then die "emptying bucket $BUCKET: $errors"; fi
    n=$((n + $(grep -c '"Key"' "$batch")))
  done
  if ((n > 0)); then note "$BUCKET: deleted $n object versions"; fi
  if ! aws_try 'NoSuchBucket' s3api delete-bucket --bucket "$BUCKET"; then
    report absent s3-bucket "$BUCKET"
    return
  fi
  report deleted s3-bucket "$BUCKET"
}

# secrets deletes the builds' secrets, <prefix>/<team>/<project>/<NAME>,
# at once (no recovery window), one stdout line each; none is no line.
# Secrets Manager's name filter ignores case, so the names are matched again
# exactly (JMESPath's starts_with does not ignore it).
secrets() {
  local name
  awscli secretsmanager list-secrets --filters "Key=name,Values=$DECAP_PREFIX/" --output text \
    --query "SecretList[?starts_with(Name, '$DECAP_PREFIX/')].[Name]" >"$WORK/secrets.$BASHPID"
  while read -r name; do
    [ -n "$name" ] || continue
    if ! aws_try 'ResourceNotFoundException' secretsmanager delete-secret --secret-id "$name" --force-delete-without-recovery; then
      continue # deleted meanwhile
    fi
    report deleted secret "$name"
  done <"$WORK/secrets.$BASHPID"
}

# delete_policy SERVICE deletes <prefix>-SERVICE and its older versions
# (IAM requires those gone first). read_policies must have run.
delete_policy() {
  local name=$DECAP_PREFIX-$1 arn
  arn=$POLICY_ARN_PREFIX/$name
  if [ -z "${POLICY_DOCUMENT[$arn]:-}" ]; then
    report absent iam-policy "$name"
    return
  fi
  # Checked here, not left to IAM's DeleteConflict: moto deletes an attached
  # policy without complaint.
  if [ "${POLICY_ATTACHMENTS[$arn]}" != 0 ]; then
    local roles users groups
    IFS=$'\t' read -r roles users groups <<<"$(awscli iam list-entities-for-policy --policy-arn "$arn" --output text \
      --query "[join(' ', PolicyRoles[].RoleName) || '-', join(' ', PolicyUsers[].UserName) || '-', join(' ', PolicyGroups[].GroupName) || '-']")"
    roles=${roles#-} users=${users#-} groups=${groups#-}
    {
      echo "policy $name is attached to: roles [$roles] users [$users] groups [$groups]."
      echo "  destroy-world.sh did not attach it and does not detach it. Detach it, then run again:"
      local r
      for r in $roles; do echo "    aws iam detach-role-policy --role-name $r --policy-arn $arn"; done
      for r in $users; do echo "    aws iam detach-user-policy --user-name $r --policy-arn $arn"; done
      for r in $groups; do echo "    aws iam detach-group-policy --group-name $r --policy-arn $arn"; done
    } >&2
    report kept iam-policy "$name"
    return 1
  fi
  local version
  for version in ${POLICY_OLDER_VERSIONS[$arn]}; do
    awscli iam delete-policy-version --policy-arn "$arn" --version-id "$version"
  done
  if ! aws_try 'NoSuchEntity' iam delete-policy --policy-arn "$arn"; then
    report absent iam-policy "$name"
    return
  fi
  report deleted iam-policy "$name"
}

# policies deletes the three policies; one still attached elsewhere is kept
# (reported "kept") and fails the run once the others are gone.
policies() {
  local svc rc=0
  read_policies
  for svc in "${DECAP_SERVICES[@]}"; do delete_policy "$svc" || rc=1; done
  return $rc
}

note "prefix $DECAP_PREFIX, account $ACCOUNT, region $AWS_REGION${AWS_ENDPOINT_URL:+, endpoint $AWS_ENDPOINT_URL}"
run_parallel queues build_events locks_table idempotency_table builds_table sessions_table bucket secrets policies
