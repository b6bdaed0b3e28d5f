# Notification service, REST side: N1 (list) and N3 (mark as read) with
# every error of the contract, and the stream's refusals before it starts
# (N2), and the 503s of a MongoDB that cannot be reached.  The
# notifications are made the way production makes them: events
# added to friend.events and message.events, stored by the consumer of a
# helper nginx; their ids follow from the stream entries.

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use Test::Nginx::Chat;
use ChatStack;
use Time::HiRes qw(time sleep);

# a consumer group of this file's own: a consumer of the shared group (the
# stack's nginx) would store the notifications in another database
our $Group = "notifications_t$$";

# users nobody else has: notifications need no users row
our $A = 800000000 + int(rand(90000000));
our $B = $A + 1;


sub event {
    my ($stream, $key, %fields) = @_;
    my $json = JSON::PP->new->canonical(0);
    my $value = '{"timestamp": "2026-02-25T03:12:03.481220", '
        . join(', ', map { "\"$_\": " . $json->encode($fields{$_}) }
                     grep { $_ ne '__event_type__' } sort keys %fields)
        . ", \"__event_type__\": \"$fields{__event_type__}\"}";
    my $id = redis_cmd('XADD', $stream, '*', 'key', $key, 'value', $value);
    die "XADD $stream: $id\n" unless $id =~ /^\d+-\d+$/;
    return notification_id($stream, $id);
}

sub wait_count {
    my ($node, $token, $n) = @_;
    my $until = time() + 10;
    while (time() < $until) {
        my ($st, $body) = api(GET => $node->url('/api/notifications'),
                              $token);
        return 1 if $st == 200 && $body->{total_count} >= $n;
        sleep 0.1;
    }
    return 0;
}

# --- the notifications: two for A (a request, an acceptance), two for B
# (a message from A in their room, a request)

my $room = mysql_cmd("INSERT INTO chat_rooms (user_1_id, user_2_id, "
    . "created_at, updated_at) VALUES ($A, $B, UTC_TIMESTAMP(), "
    . "UTC_TIMESTAMP()); SELECT LAST_INSERT_ID()");
die "room: $room\n" unless $room =~ /^\d+$/;

{
    my $helper = start_nginx_with(
        main_config => chat_main_config(),
        http_config => chat_http_config() . "chat_notify_consumer on;\n"
                       . "chat_notify_group $Group;\n",
        config      => 'location /api/ { chat_notify; }');

    # the group exists once the consumer is up
    wait_group($Group, 'message.events');

    # one at a time: created_at is when a notification was stored
    my ($ta, $tb) = (user_token($A), user_token($B));

    $ENV{TEST_NGINX_N1} = event('friend.events', 7001,
        friendship_id => 7001, requester_id => $B, requester_name => 'bob',
        addressee_id => $A, addressee_name => 'al',
        __event_type__ => 'FriendRequestSent');
    wait_count($helper, $ta, 1) or die "N1 not stored\n";
    $ENV{TEST_NGINX_N2} = event('friend.events', 7002,
        friendship_id => 7002, requester_id => $A, requester_name => 'al',
        addressee_id => $B, addressee_name => "b\x{f6}b",
        __event_type__ => 'FriendRequestAccepted');
    wait_count($helper, $ta, 2) or die "N2 not stored\n";
    $ENV{TEST_NGINX_N3} = event('message.events', $room,
        message_id => '65dab0c3f1e2a4b5c6d7e8f9', room_id => 0 + $room,
        user_id => $A, username => 'al', content => 'x' x 120,
        message_type => 'text', __event_type__ => 'MessageSent');
    wait_count($helper, $tb, 1) or die "N3 not stored\n";
    $ENV{TEST_NGINX_N4} = event('friend.events', 7003,
        friendship_id => 7003, requester_id => $A, requester_name => 'al',
        addressee_id => $B, addressee_name => 'bob',
        __event_type__ => 'FriendRequestSent');

    # events that notify nobody, and one that is not JSON
    event('friend.events', 0, friendship_id => 0, requester_id => $B,
          addressee_id => $A, __event_type__ => 'FriendRequestRejected');
    redis_cmd('XADD', 'message.events', '*', 'key', 1, 'value', '{oops');

    wait_count($helper, $tb, 2)
        or die "the helper did not store the notifications:\n"
               . $helper->read_error_log(0) . "\n";

    stop_nginx($helper);
}

# --- MongoDB unreachable: a node whose chat_mongo points at a port nothing
# listens on; the shared servers are never touched

{
    my $closed = Test::Nginx::Chat::free_port();
    (my $http = chat_http_config())
        =~ s{mongodb://127\.0\.0\.1:\d+/}{mongodb://127.0.0.1:$closed/}
        or die "no chat_mongo line in chat_http_config()\n";
    my $down = start_nginx_with(
        main_config => chat_main_config(), http_config => $http,
        config      => 'location /api/ { chat_notify; }');
    my $tok = user_token($A);

    my $res = http_request(GET => $down->url('/api/notifications'),
                           { Authorization => "Bearer $tok" }, undef, 10);
    is($res->{status}, 503, 'MongoDB down: N1 is a 503');
    is($res->{body}, '{"error":"database_error","message":"Database '
                     . 'connection or operation failed","details":null,'
                     . '"status_code":503}', '... in the E-D shape');

    $res = http_request(POST => $down->url('/api/notifications/read'),
                        { Authorization => "Bearer $tok",
                          'Content-Type' => 'application/json' },
                        '{"all":true}', 10);
    is($res->{status}, 503, 'N3 is a 503');

    # once the core has seen it down, a stream is refused as JSON too
    my $until = time() + 10;
    while (time() < $until) {
        $res = http_request(GET => $down->url('/api/notifications/stream'),
                            { Authorization => "Bearer $tok" }, undef, 2);
        last if ($res->{status} // 0) == 503;
        sleep 0.5;
    }
    is($res->{status}, 503, 'N2 is a 503 before it streams');
    like($res->{headers}{'content-type'} // '', qr{^application/json},
         '... as JSON');

    $res = http_request(GET => $down->url('/api/notifications'), {}, undef, 5);
    is($res->{status}, 401, 'authentication still comes first');

    stop_nginx($down);
}

$ENV{TEST_NGINX_A_TOKEN} = user_token($A);
$ENV{TEST_NGINX_B_TOKEN} = user_token($B);
$ENV{TEST_NGINX_A} = $A;
$ENV{TEST_NGINX_B} = $B;
$ENV{TEST_NGINX_ROOM} = $room;
$ENV{TEST_NGINX_EXPIRED} = user_token($A, undef, exp => time() - 10);
$ENV{TEST_NGINX_IDS_101} = join ',', map { '"' . ('0' x 24) . '"' } 1 .. 101;
$ENV{TEST_NGINX_IDS_100} = join ',', map { '"' . sprintf('%024x', $_) . '"' }
                                     1 .. 100;

our $Config = <<'EOF';
location /api/ { chat_notify; }
EOF

no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;
    chat_block($block);
    $block->set_value(config => $Config) unless defined $block->config;
});

run_tests();

redis_cmd('XGROUP', 'DESTROY', $_, $Group) for qw(friend.events message.events);

__DATA__

=== TEST 1: N1 without a token
--- request
GET /api/notifications
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 2: N1 with an expired token
--- request
GET /api/notifications
--- more_headers
Authorization: Bearer $TEST_NGINX_EXPIRED
--- error_code: 401
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 3: N1: the caller's notifications, newest first, as the contract prints them
--- request
GET /api/notifications
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like eval
qr/^\{"notifications":\[\{"id":"$ENV{TEST_NGINX_N2}","user_id":$ENV{TEST_NGINX_A},"type":"friend_accepted","title":"Friend request accepted","body":"b\x{c3}\x{b6}b accepted your friend request","data":\{"friendship_id":7002,"addressee_id":$ENV{TEST_NGINX_B},"addressee_username":"b\x{c3}\x{b6}b"\},"is_read":false,"read_at":null,"created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}000)?"\},\{"id":"$ENV{TEST_NGINX_N1}","user_id":$ENV{TEST_NGINX_A},"type":"friend_request","title":"New friend request","body":"bob sent you a friend request","data":\{"friendship_id":7001,"requester_id":$ENV{TEST_NGINX_B},"requester_username":"bob"\},"is_read":false,"read_at":null,"created_at":"[^"]+"\}\],"total_count":2,"unread_count":2,"has_more":false\}$/



=== TEST 4: N1 for the other member of the room: newest first, a page of one
--- request
GET /api/notifications?limit=1
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like eval
qr/^\{"notifications":\[\{"id":"$ENV{TEST_NGINX_N4}",.*"total_count":2,"unread_count":2,"has_more":true\}$/



=== TEST 5: N1 page two: the message, its preview cut at 100 characters
--- request
GET /api/notifications?limit=1&skip=1
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like eval
my $p = 'x' x 100;
qr/^\{"notifications":\[\{"id":"$ENV{TEST_NGINX_N3}","user_id":$ENV{TEST_NGINX_B},"type":"new_message","title":"New message","body":"al: $p","data":\{"room_id":$ENV{TEST_NGINX_ROOM},"message_id":"65dab0c3f1e2a4b5c6d7e8f9","sender_id":$ENV{TEST_NGINX_A},"sender_username":"al","preview":"$p"\},"is_read":false,"read_at":null,"created_at":"[^"]+"\}\],"total_count":2,"unread_count":2,"has_more":false\}$/



=== TEST 6: N1 past the end
--- request
GET /api/notifications?skip=5
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"notifications":[],"total_count":2,"unread_count":2,"has_more":false}



=== TEST 7: N1 query errors are reported together (E-C)
--- request
GET /api/notifications?limit=0&skip=-1&unread_only=maybe
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}},{"type":"greater_than_equal","loc":["query","skip"],"msg":"Input should be greater than or equal to 0","input":"-1","ctx":{"ge":0}},{"type":"bool_parsing","loc":["query","unread_only"],"msg":"Input should be a valid boolean, unable to interpret input","input":"maybe"}]}



=== TEST 8: N1 limit above 100, not a number
--- request
GET /api/notifications?limit=101&skip=x
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 100","input":"101","ctx":{"le":100}},{"type":"int_parsing","loc":["query","skip"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"}]}



=== TEST 9: N3 without a token
--- request
POST /api/notifications/read
{"all":true}
--- error_code: 401
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 10: N3 body that is not JSON: 422 before authentication
--- request
POST /api/notifications/read
{"all":
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"json_invalid","loc":["body"],"msg":"JSON decode error","input":{}}]}



=== TEST 11: N3 without ids
--- request
POST /api/notifications/read
{}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":{"error":"INVALID_INPUT","message":"Notification IDs cannot be empty","details":null,"status_code":400}}



=== TEST 12: N3 with an empty list and all false
--- request
POST /api/notifications/read
{"notification_ids":[],"all":false}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body_like: "INVALID_INPUT"



=== TEST 13: N3 with 101 ids
--- request
POST /api/notifications/read
{"notification_ids":[$TEST_NGINX_IDS_101]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"too_long","loc":["body","notification_ids"],"msg":"List should have at most 100 items after validation, not 101","input":null,"ctx":{"field_type":"List","max_length":100,"actual_length":101}}]}



=== TEST 14: N3 with wrong types
--- request
POST /api/notifications/read
{"notification_ids":["a",7,null],"all":"maybe"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"bool_parsing","loc":["body","all"],"msg":"Input should be a valid boolean, unable to interpret input","input":"maybe"},{"type":"string_type","loc":["body","notification_ids",1],"msg":"Input should be a valid string","input":7},{"type":"string_type","loc":["body","notification_ids",2],"msg":"Input should be a valid string","input":null}]}



=== TEST 15: N3 ids that are not a list, all neither a boolean nor 0/1
--- request
POST /api/notifications/read
{"notification_ids":"abc","all":2}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"bool_parsing","loc":["body","all"],"msg":"Input should be a valid boolean, unable to interpret input","input":2},{"type":"list_type","loc":["body","notification_ids"],"msg":"Input should be a valid list","input":"abc"}]}



=== TEST 16: N3 all as an object
--- request
POST /api/notifications/read
{"all":{"$ne":false}}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"bool_type","loc":["body","all"],"msg":"Input should be a valid boolean","input":{"$ne":false}}]}



=== TEST 17: N3 all null
--- request
POST /api/notifications/read
{"all":null,"notification_ids":["$TEST_NGINX_N1"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"bool_type","loc":["body","all"],"msg":"Input should be a valid boolean","input":null}]}



=== TEST 18: N3 ids that are not ObjectIds, or another user's, are ignored
--- request
POST /api/notifications/read
{"notification_ids":["zz","$TEST_NGINX_N3","$TEST_NGINX_N4","{\"$gt\":\"\"}"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":0,"message":"0 notifications marked as read"}



=== TEST 19: ... and B's are still unread
--- request
GET /api/notifications?unread_only=TRUE
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like: "total_count":2,"unread_count":2,



=== TEST 20: N3 one of A's, named twice, among 100 ids
--- request eval
"POST /api/notifications/read\n"
. '{"notification_ids":["' . $ENV{TEST_NGINX_N1} . '","'
. $ENV{TEST_NGINX_N1} . '",' . CORE::join(',', map { '"' . sprintf('%024x', $_)
. '"' } 1 .. 98) . '],"all":0}'
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":1,"message":"1 notifications marked as read"}



=== TEST 21: ... it is read now, with the time it was read
--- request
GET /api/notifications
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like eval
qr/\{"id":"$ENV{TEST_NGINX_N1}",.*"is_read":true,"read_at":"\d{4}-\d\d-\d\dT[\d:.]+","created_at":"[^"]+"\}\],"total_count":2,"unread_count":1,"has_more":false\}$/



=== TEST 22: N1 unread only
--- request
GET /api/notifications?unread_only=on
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like eval
qr/^\{"notifications":\[\{"id":"$ENV{TEST_NGINX_N2}",[^\]]+\],"total_count":1,"unread_count":1,"has_more":false\}$/



=== TEST 23: N3 the same one again: nothing left to mark
--- request
POST /api/notifications/read
{"notification_ids":["$TEST_NGINX_N1"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":0,"message":"0 notifications marked as read"}



=== TEST 24: N3 all, as a string, ids ignored
--- request
POST /api/notifications/read
{"all":"yes","notification_ids":["$TEST_NGINX_N3"]}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":1,"message":"1 notifications marked as read"}



=== TEST 25: the NotificationsRead event
--- init
my @e = split /\n/, ChatStack::redis_cmd('XREVRANGE', 'notification.events',
                                         '+', '-', 'COUNT', '20');
my ($i) = grep { $e[$_] eq 'value' && $e[$_ + 1] =~ /"user_id": $main::A, / }
          0 .. $#e;
defined $i && $e[$i - 1] eq $main::A or die "no event: @e\n";
$e[$i + 1] =~ /^\{"timestamp": "[^"]+", "user_id": $main::A, "notification_ids": \["$ENV{TEST_NGINX_N2}"\], "read_count": 1, "__event_type__": "NotificationsRead"\}$/
    or die "event: $e[$i + 1]\n";
--- request
GET /api/notifications?unread_only=1
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"notifications":[],"total_count":0,"unread_count":0,"has_more":false}



=== TEST 26: B's all: B's two, none of A's
--- request
POST /api/notifications/read
{"all":true}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":2,"message":"2 notifications marked as read"}



=== TEST 27: N3 for a user without unread notifications
--- request
POST /api/notifications/read
{"all":true}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"success":true,"read_count":0,"message":"0 notifications marked as read"}



=== TEST 28: wrong methods
--- request
DELETE /api/notifications
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 405
--- response_headers
Allow: GET
--- response_body chomp
{"detail":"Method Not Allowed"}



=== TEST 29: GET on the read endpoint
--- request
GET /api/notifications/read
--- error_code: 405
--- response_headers
Allow: POST



=== TEST 30: unknown path
--- request
GET /api/notifications/123
--- error_code: 404
--- response_body chomp
{"detail":"Not Found"}



=== TEST 31: N2 without a token: 401 as JSON, no stream
--- request
GET /api/notifications/stream
--- error_code: 401
--- response_headers
Content-Type: application/json
--- response_body chomp
{"detail":"Not authenticated"}



=== TEST 32: N2 with a forged token in the query
--- request
GET /api/notifications/stream?access_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.
--- error_code: 401



=== TEST 33: N2: the header wins, even when it is wrong
--- request
GET /api/notifications/stream?access_token=$TEST_NGINX_A_TOKEN
--- more_headers
Authorization: Basic Zm9vOmJhcg==
--- error_code: 401



=== TEST 34: N2 with a wrong method
--- request
POST /api/notifications/stream
--- error_code: 405
--- response_headers
Allow: GET
