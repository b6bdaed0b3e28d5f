# Friend service: a friend request's life (API.md 4, F1 F2 F5, 4.8) with
# every error the contract lists, the lists that show it (F3, F4) and the
# events it publishes to "friend.events" (API.md 9).

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

# users rows (the friend service reads the table directly) and tokens
env_users('fr', qw(A B C D E));

# a valid token of an id that has no users row
$ENV{TEST_NGINX_GHOST} = 2147000000 + $$ % 400000;
$ENV{TEST_NGINX_GHOST_TOKEN} = user_token($ENV{TEST_NGINX_GHOST});

# the live row of a pair: TEST_NGINX_<var> = id, _<var>_AT = created_at
sub friendship {
    my ($var, $from, $to) = @_;
    my $row = sql("SELECT id, DATE_FORMAT(created_at, "
        . "'%Y-%m-%dT%H:%i:%s') FROM friendships WHERE user_id_1 = $from "
        . "AND user_id_2 = $to AND deleted_at IS NULL");
    my ($id, $at) = split /\t/, $row;
    die "no live friendship $from -> $to\n" unless $id;
    $ENV{"TEST_NGINX_$var"} = $id;
    $ENV{"TEST_NGINX_${var}_AT"} = $at;
    return $id;
}

# the stream's last entry before this file ran: older ones are not ours
our $Mark = (split /\n/, redis_cmd('XREVRANGE', 'friend.events', '+', '-',
                                   'COUNT', '1'))[0] // '0-0';

# the newest entry of this file in "friend.events" for which $match is
# true: (key, value)
sub friend_event {
    my ($match) = @_;
    for my $try (1 .. 20) {
        for my $e (stream_entries('XREVRANGE', 'friend.events', '+',
                                  "($Mark"))
        {
            my ($key, $value) = @{ $e->[1] }{qw(key value)};
            return ($key, $value) if $match->($value);
        }
        select undef, undef, undef, 0.1;
    }
    die "no matching event in friend.events\n";
}

sub check_event {
    my ($want_key, $expect) = @_;
    my ($key, $value) = friend_event(sub { $_[0] =~ $expect });
    die "key $key, expected $want_key\n" unless $key eq $want_key;
}

our $Ts = qr/"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?"/;

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: F1 A asks B: 201 with the pending friendship
--- config
location /api/friends { chat_friend; }
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_B,"message":"hello"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
Content-Type: application/json
--- error_code: 201
--- response_headers
Content-Type: application/json
--- response_body_like: ^\{"id":\d+,"user_id_1":$TEST_NGINX_A,"user_id_2":$TEST_NGINX_B,"status":"pending","created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","updated_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","deleted_at":null\}$



=== TEST 2: the row as stored, and FriendRequestSent with real names
--- init
my $id = main::friendship('AB', $ENV{TEST_NGINX_A}, $ENV{TEST_NGINX_B});
my $row = main::sql("SELECT status, created_at = updated_at, "
    . "deleted_at IS NULL FROM friendships WHERE id = $id");
die "row: $row\n" unless $row eq "pending\t1\t1";
main::check_event($id, qr/^\{"timestamp": $main::Ts, "friendship_id": $id, "requester_id": $ENV{TEST_NGINX_A}, "requester_name": "$ENV{TEST_NGINX_A_NAME}", "addressee_id": $ENV{TEST_NGINX_B}, "addressee_name": "$ENV{TEST_NGINX_B_NAME}", "__event_type__": "FriendRequestSent"\}$/);
--- request
GET /api/friends/list
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
[]



=== TEST 3: F1 the same request again
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_B}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friendship already exists or pending"}
--- no_error_log
[error]



=== TEST 4: F1 the opposite direction is not an auto-accept
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_A}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friendship already exists or pending"}



=== TEST 5: F1 to oneself
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_A}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Cannot send friend request to yourself"}



=== TEST 6: F1 to a user that does not exist
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_GHOST}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 404
--- response_body chomp
{"detail":"Target user not found"}



=== TEST 7: F1 the self check comes before the existence check
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_GHOST}
--- more_headers
Authorization: Bearer $TEST_NGINX_GHOST_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Cannot send friend request to yourself"}



=== TEST 8: F4 B received A's request, still pending
--- init
main::friendship('AB', $ENV{TEST_NGINX_A}, $ENV{TEST_NGINX_B});
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[{"friendship_id":$TEST_NGINX_AB,"user_id":$TEST_NGINX_A,"username":"$TEST_NGINX_A_NAME","email":"","status":"pending","created_at":"$TEST_NGINX_AB_AT","request_type":"received"}],"sent_requests":[]}



=== TEST 9: F4 A sent it
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[],"sent_requests":[{"friendship_id":$TEST_NGINX_AB,"user_id":$TEST_NGINX_B,"username":"$TEST_NGINX_B_NAME","email":"","status":"pending","created_at":"$TEST_NGINX_AB_AT","request_type":"sent"}]}



=== TEST 10: F2 only the addressee can answer: the requester finds nothing
--- request
PUT /api/friends/status/$TEST_NGINX_B
{"action":"accept"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friend request not found or already processed"}



=== TEST 11: F2 a request that does not exist
--- request
PUT /api/friends/status/$TEST_NGINX_C
{"action":"accept"}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friend request not found or already processed"}



=== TEST 12: F2 an action that is neither accept nor reject
--- request eval
["PUT /api/friends/status/$ENV{TEST_NGINX_A}\n{\"action\":\"maybe\"}",
 "PUT /api/friends/status/$ENV{TEST_NGINX_A}\n{\"action\":\"Accept\"}",
 "PUT /api/friends/status/$ENV{TEST_NGINX_A}\n{\"action\":\"\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[400, 400, 400]
--- response_body eval
['{"detail":"action must be either \"accept\" or \"reject\""}',
 '{"detail":"action must be either \"accept\" or \"reject\""}',
 '{"detail":"action must be either \"accept\" or \"reject\""}']



=== TEST 13: F2 the action is checked before the request is looked up
--- request
PUT /api/friends/status/$TEST_NGINX_C
{"action":"later"}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"action must be either \"accept\" or \"reject\""}



=== TEST 14: F2 B accepts: 200, accepted, created_at kept
--- init
main::friendship('AB', $ENV{TEST_NGINX_A}, $ENV{TEST_NGINX_B});
--- request
PUT /api/friends/status/$TEST_NGINX_A
{"action":"accept"}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like: ^\{"id":$TEST_NGINX_AB,"user_id_1":$TEST_NGINX_A,"user_id_2":$TEST_NGINX_B,"status":"accepted","created_at":"$TEST_NGINX_AB_AT","updated_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","deleted_at":null\}$
--- no_error_log
[error]



=== TEST 15: FriendRequestAccepted; a second accept finds nothing pending
--- init
my $id = $ENV{TEST_NGINX_AB};
my $row = main::sql("SELECT status, deleted_at IS NULL FROM friendships "
    . "WHERE id = $id");
die "row: $row\n" unless $row eq "accepted\t1";
main::check_event($id, qr/^\{"timestamp": $main::Ts, "friendship_id": $id, "requester_id": $ENV{TEST_NGINX_A}, "requester_name": "$ENV{TEST_NGINX_A_NAME}", "addressee_id": $ENV{TEST_NGINX_B}, "addressee_name": "$ENV{TEST_NGINX_B_NAME}", "__event_type__": "FriendRequestAccepted"\}$/);
--- request
PUT /api/friends/status/$TEST_NGINX_A
{"action":"accept"}
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friend request not found or already processed"}



=== TEST 16: F3 both see each other, last_seen_at as the contract's datetime
--- init
main::sql("UPDATE users SET last_seen_at = '2026-01-02 03:04:05' "
    . "WHERE id = $ENV{TEST_NGINX_A}");
--- request eval
["GET /api/friends/list", "GET /api/friends/list"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_A_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_B_TOKEN}"]
--- error_code eval
[200, 200]
--- response_body eval
["[{\"user_id\":$ENV{TEST_NGINX_B},\"username\":\"$ENV{TEST_NGINX_B_NAME}\",\"email\":\"\",\"last_seen_at\":null}]",
 "[{\"user_id\":$ENV{TEST_NGINX_A},\"username\":\"$ENV{TEST_NGINX_A_NAME}\",\"email\":\"\",\"last_seen_at\":\"2026-01-02T03:04:05\"}]"]



=== TEST 17: F3 the same answer on every call (no stale cache, DEV-6)
--- request eval
["GET /api/friends/list", "GET /api/friends/list", "GET /api/friends/list"]
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[200, 200, 200]
--- response_body eval
[("[{\"user_id\":$ENV{TEST_NGINX_A},\"username\":\"$ENV{TEST_NGINX_A_NAME}\",\"email\":\"\",\"last_seen_at\":\"2026-01-02T03:04:05\"}]") x 3]



=== TEST 18: F4 an accepted request is no longer listed
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[],"sent_requests":[]}



=== TEST 19: F1 friends already, in either direction
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_B}}",
 "POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_A}}"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_A_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_B_TOKEN}"]
--- error_code eval
[400, 400]
--- response_body eval
['{"detail":"Friendship already exists or pending"}',
 '{"detail":"Friendship already exists or pending"}']



=== TEST 20: F5 an accepted friendship cannot be cancelled
--- request
DELETE /api/friends/request/$TEST_NGINX_B
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friend request not found or already processed"}



=== TEST 21: reject: C asks A, A rejects
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_A}}",
 "PUT /api/friends/status/$ENV{TEST_NGINX_C}\n{\"action\":\"reject\"}"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_C_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_A_TOKEN}"]
--- error_code eval
[201, 200]
--- response_body_like eval
["^\\{\"id\":\\d+,\"user_id_1\":$ENV{TEST_NGINX_C},\"user_id_2\":$ENV{TEST_NGINX_A},\"status\":\"pending\"",
 '^\{"message":"Friend request rejected successfully"\}$']



=== TEST 22: a rejected request is soft-deleted, still "pending"; event
--- init
my $row = main::sql("SELECT status, deleted_at IS NOT NULL, "
    . "updated_at = deleted_at FROM friendships "
    . "WHERE user_id_1 = $ENV{TEST_NGINX_C} "
    . "AND user_id_2 = $ENV{TEST_NGINX_A}");
die "row: $row\n" unless $row eq "pending\t1\t1";
main::check_event($ENV{TEST_NGINX_C}, qr/^\{"timestamp": $main::Ts, "friendship_id": 0, "requester_id": $ENV{TEST_NGINX_C}, "addressee_id": $ENV{TEST_NGINX_A}, "__event_type__": "FriendRequestRejected"\}$/);
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[],"sent_requests":[]}



=== TEST 23: after a rejection the request can be rejected no more
--- request
PUT /api/friends/status/$TEST_NGINX_C
{"action":"reject"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friend request not found or already processed"}



=== TEST 24: ... but a new one can be sent, and it is a new row
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_A}
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 201
--- response_body_like: ^\{"id":\d+,"user_id_1":$TEST_NGINX_C,"user_id_2":$TEST_NGINX_A,"status":"pending",



=== TEST 25: cancel: only the requester can cancel
--- init
my $n = main::sql("SELECT COUNT(*) FROM friendships "
    . "WHERE user_id_1 = $ENV{TEST_NGINX_C} "
    . "AND user_id_2 = $ENV{TEST_NGINX_A}");
die "rows: $n\n" unless $n == 2;
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_A}}",
 "DELETE /api/friends/request/$ENV{TEST_NGINX_D}",
 "DELETE /api/friends/request/$ENV{TEST_NGINX_A}"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_D_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_A_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_E_TOKEN}"]
--- error_code eval
[201, 400, 400]
--- response_body_like eval
["^\\{\"id\":\\d+,\"user_id_1\":$ENV{TEST_NGINX_D},\"user_id_2\":$ENV{TEST_NGINX_A},\"status\":\"pending\"",
 '^\{"detail":"Friend request not found or already processed"\}$',
 '^\{"detail":"Friend request not found or already processed"\}$']



=== TEST 26: F5 D cancels its request
--- request
DELETE /api/friends/request/$TEST_NGINX_A
--- more_headers
Authorization: Bearer $TEST_NGINX_D_TOKEN
--- error_code: 200
--- response_body chomp
{"message":"Friend request cancelled successfully","target_user_id":$TEST_NGINX_A}



=== TEST 27: cancelled: soft-deleted, FriendRequestCancelled, not again
--- init
my $row = main::sql("SELECT status, deleted_at IS NOT NULL FROM friendships "
    . "WHERE user_id_1 = $ENV{TEST_NGINX_D} "
    . "AND user_id_2 = $ENV{TEST_NGINX_A}");
die "row: $row\n" unless $row eq "pending\t1";
main::check_event($ENV{TEST_NGINX_D}, qr/^\{"timestamp": $main::Ts, "friendship_id": 0, "requester_id": $ENV{TEST_NGINX_D}, "addressee_id": $ENV{TEST_NGINX_A}, "__event_type__": "FriendRequestCancelled"\}$/);
--- request
DELETE /api/friends/request/$TEST_NGINX_A
--- more_headers
Authorization: Bearer $TEST_NGINX_D_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":"Friend request not found or already processed"}



=== TEST 28: after a cancel D asks again and A accepts the new request
--- request eval
["POST /api/friends/request\n{\"user_id_2\":$ENV{TEST_NGINX_A}}",
 "PUT /api/friends/status/$ENV{TEST_NGINX_D}\n{\"action\":\"accept\"}"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_D_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_A_TOKEN}"]
--- error_code eval
[201, 200]
--- response_body_like eval
["^\\{\"id\":\\d+,\"user_id_1\":$ENV{TEST_NGINX_D},\"user_id_2\":$ENV{TEST_NGINX_A},\"status\":\"pending\"",
 "^\\{\"id\":\\d+,\"user_id_1\":$ENV{TEST_NGINX_D},\"user_id_2\":$ENV{TEST_NGINX_A},\"status\":\"accepted\""]



=== TEST 29: F3 A's friends in both directions, by ascending id; F4 C's
--- request eval
["GET /api/friends/list", "GET /api/friends/requests"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 200]
--- response_body eval
["[{\"user_id\":$ENV{TEST_NGINX_B},\"username\":\"$ENV{TEST_NGINX_B_NAME}\",\"email\":\"\",\"last_seen_at\":null},"
 . "{\"user_id\":$ENV{TEST_NGINX_D},\"username\":\"$ENV{TEST_NGINX_D_NAME}\",\"email\":\"\",\"last_seen_at\":null}]",
 qr/^\{"received_requests":\[\{"friendship_id":\d+,"user_id":$ENV{TEST_NGINX_C},"username":"$ENV{TEST_NGINX_C_NAME}","email":"","status":"pending","created_at":"[-0-9T:]{19}","request_type":"received"\}\],"sent_requests":\[\]\}$/]



=== TEST 30: a caller without a users row: the event says "Unknown"
--- request
POST /api/friends/request
{"user_id_2":$TEST_NGINX_E}
--- more_headers
Authorization: Bearer $TEST_NGINX_GHOST_TOKEN
--- error_code: 201
--- response_body_like: ^\{"id":\d+,"user_id_1":$TEST_NGINX_GHOST,"user_id_2":$TEST_NGINX_E,"status":"pending",



=== TEST 31: ... and lists leave out rows whose other user is missing
--- init
my $id = main::friendship('GE', $ENV{TEST_NGINX_GHOST}, $ENV{TEST_NGINX_E});
main::check_event($id, qr/^\{"timestamp": $main::Ts, "friendship_id": $id, "requester_id": $ENV{TEST_NGINX_GHOST}, "requester_name": "Unknown", "addressee_id": $ENV{TEST_NGINX_E}, "addressee_name": "$ENV{TEST_NGINX_E_NAME}", "__event_type__": "FriendRequestSent"\}$/);
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_E_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[],"sent_requests":[]}



=== TEST 32: E can still accept it; the friend without a row is not listed
--- request eval
["PUT /api/friends/status/$ENV{TEST_NGINX_GHOST}\n{\"action\":\"accept\"}",
 "GET /api/friends/list"]
--- more_headers
Authorization: Bearer $TEST_NGINX_E_TOKEN
--- error_code eval
[200, 200]
--- response_body_like eval
["^\\{\"id\":\$TEST_NGINX_GE,\"user_id_1\":$ENV{TEST_NGINX_GHOST},\"user_id_2\":$ENV{TEST_NGINX_E},\"status\":\"accepted\"",
 '^\[\]$']
