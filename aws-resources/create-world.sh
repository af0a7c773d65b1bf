#!/usr/bin/env bash
# Creates (or brings up to date) the AWS resources Decap runs on: the SQS FIFO
# queue and its dead-letter queue, the SNS FIFO topic of the build events with
# an SQS FIFO queue subscribed for each of Decap's consumer groups, four
# DynamoDB tables, the S3 bucket for logs and artifacts, and one
# least-privilege IAM policy per service.
#
#   DECAP_PREFIX=decap AWS_REGION=us-east-1 aws-resources/create-world.sh
#
# Parameters (environment): DECAP_PREFIX (default decap; 3-40 of [a-z0-9-]),
# AWS_REGION (default $AWS_DEFAULT_REGION, else us-east-1), AWS_ENDPOINT_URL
# (optional, e.g. a moto_server), DECAP_BUCKET (default <prefix>-builds),
# DECAP_RETENTION_DAYS (default 90).
#
# Idempotent: every resource is read before it is written. stdout gets one
# line per resource, "created", "updated" (what changed goes to stderr) or
# "exists". A setting that cannot be changed in place (a table's key schema, an
# index's keys, a TTL attribute name) stops the script with an explanation
# rather than deleting data.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=aws-resources/lib.sh
. ./lib.sh

case ${1:-} in
"") ;;
-h | --help)
  sed -n '2,19p' "${0##*/}" | sed 's/^# \{0,1\}//'
  exit 0
  ;;
*) die "unexpected argument \"$1\": parameters are environment variables (see --help)" ;;
esac

load_config
aws_account

# ---------------------------------------------------------------- SQS queues

# queue_attributes ROLE prints the desired attributes, one "Name=value" a line.
# ROLE is main, dlq or events (a consumer group's queue of build events).
#
# maxReceiveCount is 1000, SQS's maximum. The dispatcher defers a request by
# leaving it undeleted and calling ChangeMessageVisibility, so every deferral
# is one more receive. Its backoff grows with the request's age (capped), and
# ~24 h of deferral (DECAP_MAX_DEFER_AGE's default) needs ~200 receives; after
# that the request is recorded as expired and deleted. 1000 leaves five times
# that, so deferral alone never dead-letters a request. What does reach the
# DLQ through redrive is a message every receive of which fails outright
# (a poison message that crashes its consumer): after 1000 visibility
# timeouts, ~8 h at 30 s. Malformed messages are sent to the DLQ explicitly by
# the dispatcher, with the reason, and never wait for this.
queue_attributes() {
  echo FifoQueue=true
  echo ContentBasedDeduplication=false
  echo VisibilityTimeout=30
  echo MessageRetentionPeriod=1209600 # 14 days, SQS's maximum
  echo SqsManagedSseEnabled=true      # SSE-SQS: encrypted, and no KMS grants needed
  case $1 in
  main)
    echo ReceiveMessageWaitTimeSeconds=20 # long polling: an idle dispatcher makes ~3 calls a minute
    echo "RedrivePolicy={\"deadLetterTargetArn\":\"$DLQ_ARN\",\"maxReceiveCount\":\"1000\"}"
    ;;
  dlq)
    echo "RedriveAllowPolicy={\"redrivePermission\":\"byQueue\",\"sourceQueueArns\":[\"$QUEUE_ARN\"]}"
    ;;
  events)
    # No dead-letter queue: a consumer retries an event in place, keeping it
    # invisible meanwhile, and the build's later events wait behind it.
    echo ReceiveMessageWaitTimeSeconds=20
    echo "Policy=$(events_queue_policy "$2")"
    ;;
  esac
}

# events_queue_policy QUEUE prints the queue policy that lets the build
# events' topic, and nothing else, send to the queue.
events_queue_policy() {
  local arn=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT:$1
  printf '{"Version":"2012-10-17","Statement":[{"Sid":"BuildEventsTopic","Effect":"Allow","Principal":{"Service":"sns.amazonaws.com"},"Action":"sqs:SendMessage","Resource":"%s","Condition":{"ArnEquals":{"aws:SourceArn":"%s"}}}]}' "$arn" "$TOPIC_ARN"
}

# queue_attr_matches NAME WANT GOT tells whether the queue's current value GOT
# of attribute NAME means the same as WANT. The two policies are JSON that SQS
# may reformat, so they are compared by their fields.
queue_attr_matches() {
  local name=$1 want=$2 got=$3
  case $name in
  RedrivePolicy)
    [[ $got =~ \"deadLetterTargetArn\"[[:space:]]*:[[:space:]]*\"([^\"]*)\" ]] || return 1
    [ "${BASH_REMATCH[1]}" = "$DLQ_ARN" ] || return 1
    [[ $got =~ \"maxReceiveCount\"[[:space:]]*:[[:space:]]*\"?([0-9]+) ]] || return 1
    [ "${BASH_REMATCH[1]}" = 1000 ]
    ;;
  RedriveAllowPolicy)
    [[ $got =~ \"redrivePermission\"[[:space:]]*:[[:space:]]*\"byQueue\" ]] || return 1
    [[ $got =~ \"sourceQueueArns\"[[:space:]]*:[[:space:]]*\[[[:space:]]*\"([^\"]*)\"[[:space:]]*\] ]] || return 1
    [ "${BASH_REMATCH[1]}" = "$QUEUE_ARN" ]
    ;;
  Policy)
    # SQS may reformat it: the topic's service principal may send, only
    # from the topic.
    local compact=${got//[[:space:]]/}
    [[ $compact == *'"sns.amazonaws.com"'* && $compact == *'"sqs:SendMessage"'* && $compact == *"\"$TOPIC_ARN\""* && $compact == *'"aws:SourceArn"'* ]]
    ;;
  *) [ "$want" = "$got" ] ;;
  esac
}

# attributes_json NAME=VALUE... prints an SQS attribute map as JSON.
attributes_json() {
  local kv sep=""
  printf '{'
  for kv; do
    printf '%s%s: %s' "$sep" "$(json_str "${kv%%=*}")" "$(json_str "${kv#*=}")"
    sep=", "
  done
  printf '}\n'
}

# ensure_queue NAME ROLE creates the queue or corrects its attributes.
ensure_queue() {
  local name=$1 role=$2 url kv key want i
  local -a desired names current changes=()
  mapfile -t desired < <(queue_attributes "$role" "$name")

  if ! aws_try 'NonExistentQueue|QueueDoesNotExist' sqs get-queue-url --queue-name "$name" --query QueueUrl --output text; then
    attributes_json "${desired[@]}" >"$WORK/queue-$role.json"
    awscli sqs create-queue --queue-name "$name" --attributes "file://$WORK/queue-$role.json" --output text >/dev/null
    report created sqs-queue "$name"
    return
  fi
  url=$OUT

  names=("${desired[@]%%=*}")
  local query
  query="Attributes.[$(IFS=,; echo "${names[*]}")]"
  OUT=$(awscli sqs get-queue-attributes --queue-url "$url" --attribute-names All --query "$query" --output text)
  IFS=$'\t' read -r -a current <<<"$OUT"

  local unreported=""
  for i in "${!desired[@]}"; do
    kv=${desired[i]} key=${kv%%=*} want=${kv#*=}
    if queue_attr_matches "$key" "$want" "${current[i]:-None}"; then continue; fi
    if [ "$key" = FifoQueue ]; then
      die "queue $name exists but is not a FIFO queue; delete it (destroy-world.sh) and run again"
    fi
    if [ "${current[i]:-None}" = None ] && [ "$key" = RedriveAllowPolicy ]; then
      unreported=$kv # see below
      continue
    fi
    note "$name: $key is ${current[i]:-unset}, setting $want"
    changes+=("$kv")
  done

  # moto accepts RedriveAllowPolicy but never reports it back, so "unset" may
  # mean "unknowable". Set it (an idempotent put) and look again: if it is
  # reported now it was really missing (real AWS); if it is still not
  # reported, this endpoint cannot show it, and it is not counted as a change.
  if [ -n "$unreported" ]; then
    attributes_json "$unreported" >"$WORK/queue-$role-allow.json"
    awscli sqs set-queue-attributes --queue-url "$url" --attributes "file://$WORK/queue-$role-allow.json"
    OUT=$(awscli sqs get-queue-attributes --queue-url "$url" --attribute-names All --query Attributes.RedriveAllowPolicy --output text)
    if [ "$OUT" = None ]; then
      note "$name: this endpoint does not report RedriveAllowPolicy; set it without being able to verify it"
    else
      note "$name: RedriveAllowPolicy was unset, set it"
      changes+=(reported)
    fi
  fi

  if ((${#changes[@]} == 0)); then
    report exists sqs-queue "$name"
    return
  fi
  if [ "${changes[*]}" != reported ]; then
    local -a settable=()
    for kv in "${changes[@]}"; do [ "$kv" = reported ] || settable+=("$kv"); done
    attributes_json "${settable[@]}" >"$WORK/queue-$role-set.json"
    awscli sqs set-queue-attributes --queue-url "$url" --attributes "file://$WORK/queue-$role-set.json"
  fi
  report updated sqs-queue "$name"
}

# The DLQ first: the main queue's redrive policy must name an existing queue,
# and the DLQ's redrive-allow policy already names the main queue's (derived)
# ARN, so SQS accepts the redrive policy at once.
queues() {
  ensure_queue "$DLQ" dlq
  ensure_queue "$QUEUE" main
}

# ------------------------------------------------------------ build events

# ensure_topic creates the build events' SNS FIFO topic, or checks that the
# one there is FIFO and leaves deduplication to the IDs the services send.
# Not encrypted with KMS: that would need KMS grants for every publisher and
# every subscribed queue's service principal.
ensure_topic() {
  if aws_try 'NotFound|does not exist' sns get-topic-attributes --topic-arn "$TOPIC_ARN" \
    --query 'Attributes.[FifoTopic, ContentBasedDeduplication]' --output text; then
    local fifo dedup
    read -r fifo dedup <<<"$OUT"
    [ "$fifo" = true ] || die "topic $TOPIC exists but is not a FIFO topic; delete it (destroy-world.sh) and run again"
    if [ "$dedup" = true ]; then
      awscli sns set-topic-attributes --topic-arn "$TOPIC_ARN" --attribute-name ContentBasedDeduplication --attribute-value false
      note "$TOPIC: ContentBasedDeduplication was true, set false (the services send each event's ID)"
      report updated sns-topic "$TOPIC"
      return
    fi
    report exists sns-topic "$TOPIC"
    return
  fi
  OUT=$(awscli sns create-topic --name "$TOPIC" --attributes FifoTopic=true,ContentBasedDeduplication=false --query TopicArn --output text)
  [ "$OUT" = "$TOPIC_ARN" ] || die "created topic $OUT, want $TOPIC_ARN"
  report created sns-topic "$TOPIC"
}

# ensure_subscription QUEUE subscribes the queue to the topic with raw
# delivery (the SQS body is the event as published), or turns raw delivery
# on for the subscription there.
ensure_subscription() {
  local queue=$1 arn sub raw
  arn=arn:$PARTITION:sqs:$AWS_REGION:$ACCOUNT:$queue
  sub=$(awscli sns list-subscriptions-by-topic --topic-arn "$TOPIC_ARN" --output text \
    --query "Subscriptions[?Protocol=='sqs' && Endpoint=='$arn'] | [0].SubscriptionArn")
  if [ -z "$sub" ] || [ "$sub" = None ]; then
    awscli sns subscribe --topic-arn "$TOPIC_ARN" --protocol sqs --notification-endpoint "$arn" \
      --attributes RawMessageDelivery=true --return-subscription-arn --output text >/dev/null
    report created sns-subscription "$queue"
    return
  fi
  raw=$(awscli sns get-subscription-attributes --subscription-arn "$sub" --query Attributes.RawMessageDelivery --output text)
  if [ "$raw" != true ]; then
    awscli sns set-subscription-attributes --subscription-arn "$sub" --attribute-name RawMessageDelivery --attribute-value true
    note "$queue: the subscription's RawMessageDelivery was $raw, set true"
    report updated sns-subscription "$queue"
    return
  fi
  report exists sns-subscription "$queue"
}

# The topic, then each group's queue and its subscription (a subscription
# names both).
build_events() {
  local queue
  ensure_topic
  for queue in "${EVENT_QUEUES[@]}"; do
    ensure_queue "$queue" events
    ensure_subscription "$queue"
  done
}

# ----------------------------------------------------------- DynamoDB tables

# One describe-table answer, flattened into tab-separated fields: status,
# billing mode, "attr:KEYTYPE,..." and "index:hash:range:projection:status,..."
# (or "-" without indexes).
TABLE_QUERY="Table.[TableStatus, BillingModeSummary.BillingMode || 'PROVISIONED', \
join(',', KeySchema[].join(':', [AttributeName, KeyType])), \
join(',', (GlobalSecondaryIndexes || \`[]\`)[].join(':', [IndexName, KeySchema[0].AttributeName, \
KeySchema[1].AttributeName || '-', Projection.ProjectionType, IndexStatus || 'ACTIVE'])) || '-']"

# index_json NAME:HASH:RANGE[:PROJECTION] prints a GlobalSecondaryIndex
# definition (projection ALL unless given).
index_json() {
  local name hash range projection
  IFS=: read -r name hash range projection <<<"$1"
  printf '{"IndexName": "%s", "KeySchema": [{"AttributeName": "%s", "KeyType": "HASH"}, {"AttributeName": "%s", "KeyType": "RANGE"}], "Projection": {"ProjectionType": "%s"}}' \
    "$name" "$hash" "$range" "${projection:-ALL}"
}

# attribute_definitions ATTR... prints AttributeDefinitions (all strings) for
# the distinct attributes given.
attribute_definitions() {
  local -A seen=()
  local a sep=""
  printf '['
  for a; do
    [ -z "${seen[$a]:-}" ] || continue
    seen[$a]=1
    printf '%s{"AttributeName": "%s", "AttributeType": "S"}' "$sep" "$a"
    sep=", "
  done
  printf ']'
}

# ensure_table NAME HASH[:RANGE] TTL_ATTR [INDEX:HASH:RANGE[:PROJECTION]...] creates the
# table or brings it up to date: billing mode, missing indexes, point-in-time
# recovery, TTL. TTL_ATTR "-" leaves TTL alone.
ensure_table() {
  local name=$1 hash range ttl=$3 state=exists
  IFS=: read -r hash range <<<"$2"
  shift 3
  local -a attrs=("$hash")
  local key_schema="$hash:HASH" key_json
  key_json=$(printf '{"AttributeName": "%s", "KeyType": "HASH"}' "$hash")
  if [ -n "$range" ]; then
    attrs+=("$range")
    key_schema+=",$range:RANGE"
    key_json+=$(printf ', {"AttributeName": "%s", "KeyType": "RANGE"}' "$range")
  fi
  local -a indexes=("$@")
  local spec idx_name idx_hash idx_range idx_projection
  for spec in "${indexes[@]}"; do
    IFS=: read -r idx_name idx_hash idx_range idx_projection <<<"$spec"
    attrs+=("$idx_hash" "$idx_range")
  done

  if aws_try 'ResourceNotFoundException' dynamodb describe-table --table-name "$name" --query "$TABLE_QUERY" --output text; then
    local status billing keys gsis
    IFS=$'\t' read -r status billing keys gsis <<<"$OUT"
    if [ "$keys" != "$key_schema" ]; then
      die "table $name exists with key schema $keys, want $key_schema; a key schema cannot change in place: delete the table (destroy-world.sh) or use another DECAP_PREFIX"
    fi
    if [ "$status" != ACTIVE ]; then wait_table_active "$name"; fi
    if [ "$billing" != PAY_PER_REQUEST ]; then
      note "$name: billing mode is $billing, switching to PAY_PER_REQUEST"
      awscli dynamodb update-table --table-name "$name" --billing-mode PAY_PER_REQUEST --output text --query TableDescription.TableStatus >/dev/null
      wait_table_active "$name"
      state=updated
    fi
    for spec in "${indexes[@]}"; do
      IFS=: read -r idx_name idx_hash idx_range idx_projection <<<"$spec"
      idx_projection=${idx_projection:-ALL}
      local have
      have=$(tr ',' '\n' <<<"$gsis" | grep -E "^$idx_name:" || true)
      if [ -z "$have" ]; then
        # DynamoDB adds one index per UpdateTable call, and only to an ACTIVE table.
        note "$name: adding index $idx_name (this can take minutes on a big table)"
        awscli dynamodb update-table --table-name "$name" \
          --attribute-definitions "$(attribute_definitions "$idx_hash" "$idx_range")" \
          --global-secondary-index-updates "[{\"Create\": $(index_json "$spec")}]" \
          --output text --query TableDescription.TableStatus >/dev/null
        wait_table_active "$name"
        state=updated
      elif [[ $have != "$idx_name:$idx_hash:$idx_range:$idx_projection:"* ]]; then
        die "table $name has index ${have%:*}, want $idx_name:$idx_hash:$idx_range:$idx_projection; an index cannot change in place: delete the index (aws dynamodb update-table --global-secondary-index-updates Delete) and run again"
      fi
    done
  else
    local gsi_json="" sep=""
    for spec in "${indexes[@]}"; do
      gsi_json+="$sep$(index_json "$spec")"
      sep=", "
    done
    {
      printf '{"TableName": "%s", "BillingMode": "PAY_PER_REQUEST",\n' "$name"
      printf ' "AttributeDefinitions": %s,\n' "$(attribute_definitions "${attrs[@]}")"
      printf ' "KeySchema": [%s]' "$key_json"
      if [ -n "$gsi_json" ]; then printf ',\n "GlobalSecondaryIndexes": [%s]' "$gsi_json"; fi
      printf '}\n'
    } >"$WORK/table-$name.json"
    awscli dynamodb create-table --cli-input-json "file://$WORK/table-$name.json" \
      --query TableDescription.TableStatus --output text >/dev/null
    state=created
    wait_table_active "$name"
  fi

  # Point-in-time recovery. Right after CreateTable, AWS may answer
  # ContinuousBackupsUnavailableException for a while: retry for ~5 minutes.
  # A table just created has neither PITR nor TTL: no need to ask.
  local pitr=DISABLED tries=0
  if [ "$state" != created ]; then
    pitr=$(awscli dynamodb describe-continuous-backups --table-name "$name" \
      --query ContinuousBackupsDescription.PointInTimeRecoveryDescription.PointInTimeRecoveryStatus --output text)
  fi
  if [ "$pitr" != ENABLED ] && [ "$pitr" != ENABLING ]; then
    until aws_try 'ContinuousBackupsUnavailable' dynamodb update-continuous-backups --table-name "$name" \
      --point-in-time-recovery-specification PointInTimeRecoveryEnabled=true --output text --query ContinuousBackupsDescription.ContinuousBackupsStatus; do
      tries=$((tries + 1))
      ((tries < 60)) || die "table $name: point-in-time recovery still unavailable after 5 minutes"
      ((tries % 6 == 1)) && note "$name: continuous backups not available yet, retrying"
      sleep 5
    done
    if [ "$state" != created ]; then note "$name: point-in-time recovery was $pitr, enabled it"; state=updated; fi
  fi

  # TTL, once the table is ACTIVE. DynamoDB deletes expired items lazily (often
  # days later), so every reader also checks expiry in its conditions.
  if [ "$ttl" = - ]; then
    report "$state" dynamodb-table "$name"
    return
  fi
  local ttl_status=DISABLED ttl_attr=""
  if [ "$state" != created ]; then
    read -r ttl_status ttl_attr <<<"$(awscli dynamodb describe-time-to-live --table-name "$name" \
      --query 'TimeToLiveDescription.[TimeToLiveStatus, AttributeName]' --output text)"
  fi
  case $ttl_status in
  ENABLED | ENABLING)
    if [ "$ttl_attr" != "$ttl" ]; then
      die "table $name has TTL on attribute \"$ttl_attr\", want \"$ttl\"; disable it by hand (aws dynamodb update-time-to-live), wait for DISABLED (AWS allows one change per hour), and run again"
    fi
    ;;
  DISABLING)
    die "table $name: TTL is being disabled; run again once it is DISABLED (AWS allows one TTL change per hour)"
    ;;
  *)
    awscli dynamodb update-time-to-live --table-name "$name" \
      --time-to-live-specification "Enabled=true,AttributeName=$ttl" --output text >/dev/null
    if [ "$state" != created ]; then note "$name: TTL was $ttl_status, enabled it on $ttl"; state=updated; fi
    ;;
  esac
  report "$state" dynamodb-table "$name"
}

locks_table() { ensure_table "$LOCKS_TABLE" pk ttl; }
idempotency_table() { ensure_table "$IDEMPOTENCY_TABLE" pk ttl; }
# The UI's sessions, keyed by the SHA-256 of the session ID; TTL cleans up.
sessions_table() { ensure_table "$SESSIONS_TABLE" pk ttl; }
# Build records are history: no TTL (their logs and artifacts expire in S3).
builds_table() { ensure_table "$BUILDS_TABLE" buildId - "${BUILDS_INDEXES[@]}"; }

# ------------------------------------------------------------------ S3 bucket

# lifecycle_rules prints the desired rules normalized the way lifecycle_query
# prints the bucket's: "id status prefix expiration-days abort-days", sorted.
LIFECYCLE_QUERY="Rules[].[ID, Status, Filter.Prefix || Prefix || '(all)', \
to_string(Expiration.Days || '-'), to_string(AbortIncompleteMultipartUpload.DaysAfterInitiation || '-')]"
lifecycle_rules() {
  printf '%s\t%s\t%s\t%s\t%s\n' \
    abort-incomplete-uploads Enabled '(all)' - 7 \
    expire-artifacts Enabled artifacts/ "$DECAP_RETENTION_DAYS" - \
    expire-logs Enabled logs/ "$DECAP_RETENTION_DAYS" - | sort
}
lifecycle_json() {
  cat <<JSON
{"Rules": [
  {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": $DECAP_RETENTION_DAYS}},
  {"ID": "expire-artifacts", "Status": "Enabled", "Filter": {"Prefix": "artifacts/"}, "Expiration": {"Days": $DECAP_RETENTION_DAYS}},
  {"ID": "abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": ""}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7}}
]}
JSON
}

bucket() {
  local state=exists pab=""
  # The first read also tells whether the bucket exists and is ours
  # (--expected-bucket-owner: AccessDenied for another account's bucket).
  if aws_try 'NoSuchBucket|NoSuchPublicAccessBlockConfiguration|AccessDenied' s3api get-public-access-block \
    --bucket "$BUCKET" --expected-bucket-owner "$ACCOUNT" --output text \
    --query 'PublicAccessBlockConfiguration.[BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets]'; then
    pab=${OUT//$'\t'/ }
  elif [[ $ERR == *NoSuchPublicAccessBlockConfiguration* ]]; then
    pab=none
  elif [[ $ERR == *AccessDenied* ]]; then
    die "bucket $BUCKET belongs to another account (or these credentials may not read it); choose another name with DECAP_BUCKET"
  else
    local where=()
    # us-east-1 is the one region that rejects its own name as LocationConstraint.
    if [ "$AWS_REGION" != us-east-1 ]; then
      where=(--create-bucket-configuration "LocationConstraint=$AWS_REGION")
    fi
    if ! aws_try 'BucketAlreadyExists' s3api create-bucket --bucket "$BUCKET" ${where[@]+"${where[@]}"} \
      --object-ownership BucketOwnerEnforced --output text; then
      die "bucket name $BUCKET is taken by another account (S3 names are global); choose another with DECAP_BUCKET"
    fi
    state=created
  fi

  # Every setting of a bucket just created is put without asking first.
  # Public access: all four blocks on. (New AWS buckets have them already;
  # moto's do not.)
  if [ "$pab" != "True True True True" ]; then
    awscli s3api put-public-access-block --bucket "$BUCKET" --public-access-block-configuration \
      BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true
    if [ "$state" != created ]; then note "$BUCKET: public access block was $pab, blocked all"; state=updated; fi
  fi

  # Default encryption SSE-S3: encrypted at rest with no KMS grants to manage.
  # (New AWS buckets default to it; moto's have none.)
  OUT=""
  if [ "$state" = created ] || ! aws_try 'ServerSideEncryptionConfigurationNotFound' s3api get-bucket-encryption --bucket "$BUCKET" \
    --query 'ServerSideEncryptionConfiguration.Rules[0].ApplyServerSideEncryptionByDefault.SSEAlgorithm' \
    --output text || [ "$OUT" != AES256 ]; then
    awscli s3api put-bucket-encryption --bucket "$BUCKET" --server-side-encryption-configuration \
      '{"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}'
    if [ "$state" != created ]; then note "$BUCKET: default encryption was ${OUT:-none}, set SSE-S3 (AES256)"; state=updated; fi
  fi

  # Lifecycle: logs and artifacts expire after DECAP_RETENTION_DAYS; unfinished
  # multipart uploads anywhere are aborted after 7 days. The put replaces the
  # whole configuration, so rules added by hand are dropped (and reported).
  local got=""
  if [ "$state" != created ] && aws_try 'NoSuchLifecycleConfiguration' s3api get-bucket-lifecycle-configuration --bucket "$BUCKET" \
    --query "$LIFECYCLE_QUERY" --output text; then
    got=$(sort <<<"$OUT")
  fi
  if [ "$got" != "$(lifecycle_rules)" ]; then
    lifecycle_json >"$WORK/lifecycle.json"
    awscli s3api put-bucket-lifecycle-configuration --bucket "$BUCKET" \
      --lifecycle-configuration "file://$WORK/lifecycle.json" >/dev/null
    if [ "$state" != created ]; then note "$BUCKET: lifecycle rules were [${got//$'\n'/; }], replaced them"; state=updated; fi
  fi
  report "$state" s3-bucket "$BUCKET"
}

# --------------------------------------------------------------- IAM policies

# render_policy SERVICE prints policies/SERVICE.json with its {{PLACEHOLDERS}}
# replaced by this world's ARNs (plain bash replacement: no sed, no envsubst).
render_policy() {
  local doc var
  doc=$(<"policies/$1.json")
  for var in QUEUE_ARN DLQ_ARN LOCKS_TABLE_ARN IDEMPOTENCY_TABLE_ARN BUILDS_TABLE_ARN SESSIONS_TABLE_ARN BUCKET_ARN SECRETS_ARN_PREFIX \
    TOPIC_ARN EVENTS_QUEUE_ARN_PREFIX TAIL_QUEUE_ARN_PATTERN; do
    doc=${doc//"{{$var}}"/${!var}}
  done
  if [[ $doc == *"{{"* ]]; then die "policies/$1.json has an unknown placeholder: $(grep -o '{{[^}]*}}' <<<"$doc" | head -1)"; fi
  printf '%s\n' "$doc"
}

# ensure_policy SERVICE creates the customer-managed policy <prefix>-SERVICE,
# or, when its default version differs from the rendered template, adds a new
# default version (deleting the oldest non-default one when IAM's limit of
# five versions is reached). read_policies must have run. Policies are only
# created here, never attached: attach them to the services' roles (e.g.
# IRSA roles) yourself.
ensure_policy() {
  local svc=$1 name=$DECAP_PREFIX-$1 arn file=$WORK/policy-$1.json
  arn=$POLICY_ARN_PREFIX/$name
  render_policy "$svc" >"$file"

  if [ -z "${POLICY_DOCUMENT[$arn]:-}" ]; then
    awscli iam create-policy --policy-name "$name" --policy-document "file://$file" \
      --description "Decap $svc: least privilege on the $DECAP_PREFIX resources (aws-resources/create-world.sh)" \
      --output text --query Policy.Arn >/dev/null
    report created iam-policy "$name"
    return
  fi
  # The templates have no blanks inside strings, so comparing without any
  # whitespace compares the documents (IAM keeps the key order it was given).
  if [ "$(tr -d ' \t\r\n' <<<"${POLICY_DOCUMENT[$arn]}")" = "$(tr -d ' \t\r\n' <"$file")" ]; then
    report exists iam-policy "$name"
    return
  fi
  local -a older
  read -r -a older <<<"${POLICY_OLDER_VERSIONS[$arn]}"
  if ((${#older[@]} >= 4)); then
    note "$name: five versions exist, deleting the oldest non-default one (${older[0]})"
    awscli iam delete-policy-version --policy-arn "$arn" --version-id "${older[0]}"
  fi
  awscli iam create-policy-version --policy-arn "$arn" --policy-document "file://$file" --set-as-default \
    --output text --query PolicyVersion.VersionId >/dev/null
  note "$name: document differed from policies/$svc.json, made a new default version"
  report updated iam-policy "$name"
}

policies() {
  local svc
  read_policies
  for svc in "${DECAP_SERVICES[@]}"; do ensure_policy "$svc"; done
}

note "prefix $DECAP_PREFIX, account $ACCOUNT, region $AWS_REGION${AWS_ENDPOINT_URL:+, endpoint $AWS_ENDPOINT_URL}"
run_parallel queues build_events locks_table idempotency_table builds_table sessions_table bucket policies
