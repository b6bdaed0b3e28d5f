# Chat service, /api/messages: send (C4), pages (C5), edit (C8) and soft
# delete (C9) with every error the contract lists, the order of its checks,
# bad input, and the events on "message.events".

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

# messages of this run only: MariaDB's ids start again with every run
$ENV{TEST_NGINX_MONGO_DATABASE} = unique_name('chat_t');

our $Tag = unique_name('t');
$ENV{TEST_NGINX_TAG} = $Tag;

env_users('ms', qw(A B C));

# rooms A-B and A-C, made directly; updated_at far back to see it move
for my $pair (['AB', 'B'], ['AC', 'C']) {
    my $other = $ENV{"TEST_NGINX_$pair->[1]"};
    my $id = sql("INSERT INTO chat_rooms (user_1_id, user_2_id, created_at, "
        . "updated_at) VALUES ($ENV{TEST_NGINX_A}, $other, "
        . "'2020-01-01 00:00:00', '2020-01-01 00:00:00'); "
        . "SELECT LAST_INSERT_ID()");
    $ENV{"TEST_NGINX_$pair->[0]"} = $id;
}

# a room id that does not exist
$ENV{TEST_NGINX_NOROOM} = 2147483000;

# a message id that no message has
$ENV{TEST_NGINX_NOMSG} = 'ffffffffffffffffffffffff';

sub send_msg {
    my ($who, $room, $content) = @_;
    my ($s, $b) = api(POST => "/api/messages/$room",
                      $ENV{"TEST_NGINX_${who}_TOKEN"}, { content => $content });
    die "send: $s\n" unless $s == 201;
    return $b->{id};
}

our $Config = <<'EOF';
location /api/ { chat_msg; }
EOF

workers(2);
master_on();
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;
    chat_block($block);
    $block->set_value(config => $Config) unless defined $block->config;
});

run_tests();

__DATA__

=== TEST 1: C4 sends a message
--- request
POST /api/messages/$TEST_NGINX_AB
{"content":"hello $TEST_NGINX_TAG"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 201
--- response_body_like: ^\{"id":"[0-9a-f]{24}","user_id":$TEST_NGINX_A,"room_id":$TEST_NGINX_AB,"room_type":"private","content":"hello $TEST_NGINX_TAG","message_type":"text","file_url":null,"file_name":null,"file_size":null,"file_type":null,"is_deleted":false,"deleted_at":null,"is_edited":false,"edited_at":null,"created_at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?)","updated_at":"\1","read_by":null,"is_read":null\}$
--- no_error_log
[error]



=== TEST 2: MessageSent with the real username; the room moved up
--- init
my ($key, $v) = main::event_with('message.events', "hello $main::Tag");
$key eq $ENV{TEST_NGINX_AB} or die "key: $key\n";
$v =~ /^\{"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?", "message_id": "[0-9a-f]{24}", "room_id": $ENV{TEST_NGINX_AB}, "user_id": $ENV{TEST_NGINX_A}, "username": "$ENV{TEST_NGINX_A_NAME}", "content": "hello $main::Tag", "message_type": "text", "__event_type__": "MessageSent"\}$/
    or die "event: $v\n";
my $at = main::sql("SELECT updated_at > '2020-01-01 00:00:00', created_at "
                   . "FROM chat_rooms WHERE id = $ENV{TEST_NGINX_AB}");
$at eq "1\t2020-01-01 00:00:00" or die "room: $at\n";
--- request
GET /api/messages/$TEST_NGINX_AB
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 200
--- response_body_like: ^\{"messages":\[\{"id":"[0-9a-f]{24}","user_id":$TEST_NGINX_A,"room_id":$TEST_NGINX_AB,"room_type":"private","content":"hello $TEST_NGINX_TAG","message_type":"text","file_url":null,"file_name":null,"file_size":null,"file_type":null,"is_deleted":false,"deleted_at":null,"is_edited":false,"edited_at":null,"created_at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{3}000)?)","updated_at":"\1","read_by":null,"is_read":null\}\],"total_count":1,"has_more":false\}$



=== TEST 3: message types
--- request eval
['POST /api/messages/$TEST_NGINX_AB
{"content":"a","message_type":"image"}',
'POST /api/messages/$TEST_NGINX_AB
{"content":"a","message_type":"file"}',
'POST /api/messages/$TEST_NGINX_AB
{"content":"a","message_type":"system"}',
'POST /api/messages/$TEST_NGINX_AB
{"content":"a","message_type":null}']
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[201, 201, 201, 201]
--- response_body_like eval
['"content":"a","message_type":"image"', '"content":"a","message_type":"file"',
 '"content":"a","message_type":"system"', '"content":"a","message_type":"text"']



=== TEST 4: an unknown message type, wrong types, missing content
--- request eval
['POST /api/messages/$TEST_NGINX_AB
{"content":"a","message_type":"video"}',
'POST /api/messages/$TEST_NGINX_AB
{"content":5,"message_type":7}',
'POST /api/messages/$TEST_NGINX_AB
{"message_type":"text"}',
'POST /api/messages/$TEST_NGINX_AB
{"content":null}',
'POST /api/messages/$TEST_NGINX_AB
{"content":{"$gt":""}}',
'POST /api/messages/$TEST_NGINX_AB
{"content":""}']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"value_error","loc":["body","message_type"],"msg":"Value error, message_type must be one of: text, image, file, system","input":"video"}]}',
 '{"detail":[{"type":"string_type","loc":["body","content"],"msg":"Input should be a valid string","input":5},{"type":"string_type","loc":["body","message_type"],"msg":"Input should be a valid string","input":7}]}',
 '{"detail":[{"type":"missing","loc":["body","content"],"msg":"Field required","input":{"message_type":"text"}}]}',
 '{"detail":[{"type":"string_type","loc":["body","content"],"msg":"Input should be a valid string","input":null}]}',
 '{"detail":[{"type":"string_type","loc":["body","content"],"msg":"Input should be a valid string","input":{"$gt":""}}]}',
 '{"detail":[{"type":"string_too_short","loc":["body","content"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}']



=== TEST 5: lengths count code points: 300 are fine, 301 are not
--- request eval
["POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"" . ("é" x 300) . "\"}",
 "POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"" . ("😀" x 300) . "\"}",
 "POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"" . ("é" x 301) . "\"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[201, 201, 422]
--- response_body_like eval
['"content":"' . ("é" x 300) . '"', '"content":"' . ("😀" x 300) . '"',
 '^\{"detail":\[\{"type":"string_too_long","loc":\["body","content"\],"msg":"String should have at most 300 characters","input":"' . ("é" x 301) . '","ctx":\{"max_length":300\}\}\]\}$']



=== TEST 6: content that is not UTF-8, bodies that are not JSON objects
--- request eval
["POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"a\xff\xfeb\"}",
 "POST /api/messages/\$TEST_NGINX_AB\n{\"content\": \"a\",",
 "POST /api/messages/\$TEST_NGINX_AB\n[\"content\"]",
 "POST /api/messages/\$TEST_NGINX_AB\n"]
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"string_unicode","loc":["body","content"],"msg":"Input should be a valid string, unable to parse raw data as a unicode string","input":null}]}',
 '{"detail":[{"type":"json_invalid","loc":["body"],"msg":"JSON decode error","input":{}}]}',
 '{"detail":[{"type":"model_attributes_type","loc":["body"],"msg":"Input should be a valid dictionary or object to extract fields from","input":["content"]}]}',
 '{"detail":[{"type":"missing","loc":["body"],"msg":"Field required","input":null}]}']



=== TEST 7: whitespace only is a 400, after the room checks
--- request eval
["POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"  \\t\\n \"}",
 "POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"\xe3\x80\x80\xc2\xa0\xe2\x80\x83\"}",
 "POST /api/messages/\$TEST_NGINX_AC\n{\"content\":\"   \"}",
 "POST /api/messages/\$TEST_NGINX_NOROOM\n{\"content\":\"   \"}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code eval
[400, 400, 403, 404]
--- response_body eval
['{"detail":{"error":"INVALID_INPUT","message":"Message content cannot be empty","details":null,"status_code":400}}',
 '{"detail":{"error":"INVALID_INPUT","message":"Message content cannot be empty","details":null,"status_code":400}}',
 '{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}',
 '{"detail":{"error":"resource_not_found","message":"Chat room not found","details":{"resource":"Chat room"},"status_code":404}}']



=== TEST 8: the schema first (path and body together), then positive ids
--- request eval
['POST /api/messages/abc
{"content":""}',
'POST /api/messages/0
{"content":""}',
'POST /api/messages/0
{"content":"x"}',
'POST /api/messages/-3
{"content":"   "}']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"abc"},{"type":"string_too_short","loc":["body","content"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}',
 '{"detail":[{"type":"string_too_short","loc":["body","content"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":-3}],"status_code":422}}']



=== TEST 9: JSON that does not parse is a 422 even without a token
--- request eval
['POST /api/messages/$TEST_NGINX_AB
{"content":',
'POST /api/messages/$TEST_NGINX_AB
{"content":"x"}']
--- error_code eval
[422, 401]



=== TEST 10: text is data: quotes, backslashes, SQL, control characters
--- request
POST /api/messages/$TEST_NGINX_AB
{"content":"x'); DROP TABLE chat_rooms; -- \"q\" \\ \/ \n\t\u0001 ü"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 201
--- response_body_like: "content":"x'\); DROP TABLE chat_rooms; -- \\"q\\" \\\\ / \\n\\t\\u0001 ü"



=== TEST 11: a body beyond the JSON limit
--- request eval
"POST /api/messages/\$TEST_NGINX_AB\n{\"content\":\"" . ("x" x 70000) . "\"}"
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 413
--- response_body chomp
{"detail":"Request body too large"}



=== TEST 12: C5 pages newest first, each page oldest to newest
--- init
for my $i (0 .. 6) {
    main::send_msg($i % 2 ? 'C' : 'A', $ENV{TEST_NGINX_AC}, "m$i");
}
--- request eval
['GET /api/messages/$TEST_NGINX_AC', 'GET /api/messages/$TEST_NGINX_AC?limit=3',
 'GET /api/messages/$TEST_NGINX_AC?limit=3&skip=3',
 'GET /api/messages/$TEST_NGINX_AC?skip=6&limit=3',
 'GET /api/messages/$TEST_NGINX_AC?skip=7',
 'GET /api/messages/$TEST_NGINX_AC?skip=9223372036854775807&limit=100']
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code eval
[200, 200, 200, 200, 200, 200]
--- response_body_like eval
['^\{"messages":\[\{[^}]*"content":"m0"[^}]*\},\{[^}]*"content":"m1"[^}]*\},\{[^}]*"content":"m2"[^}]*\},\{[^}]*"content":"m3"[^}]*\},\{[^}]*"content":"m4"[^}]*\},\{[^}]*"content":"m5"[^}]*\},\{[^}]*"content":"m6"[^}]*\}\],"total_count":7,"has_more":false\}$',
 '^\{"messages":\[\{[^}]*"content":"m4"[^}]*\},\{[^}]*"content":"m5"[^}]*\},\{[^}]*"content":"m6"[^}]*\}\],"total_count":7,"has_more":true\}$',
 '^\{"messages":\[\{[^}]*"content":"m1"[^}]*\},\{[^}]*"content":"m2"[^}]*\},\{[^}]*"content":"m3"[^}]*\}\],"total_count":7,"has_more":true\}$',
 '^\{"messages":\[\{[^}]*"content":"m0"[^}]*\}\],"total_count":7,"has_more":false\}$',
 '^\{"messages":\[\],"total_count":7,"has_more":false\}$',
 '^\{"messages":\[\],"total_count":7,"has_more":false\}$']



=== TEST 13: DEV-7: the same page number with other limits is still exact
--- request eval
['GET /api/messages/$TEST_NGINX_AC?limit=2', 'GET /api/messages/$TEST_NGINX_AC?limit=4',
 'GET /api/messages/$TEST_NGINX_AC?limit=2&skip=1']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 200, 200]
--- response_body_like eval
['^\{"messages":\[\{[^}]*"content":"m5"[^}]*\},\{[^}]*"content":"m6"[^}]*\}\],"total_count":7,"has_more":true\}$',
 '^\{"messages":\[\{[^}]*"content":"m3"[^}]*\},\{[^}]*"content":"m4"[^}]*\},\{[^}]*"content":"m5"[^}]*\},\{[^}]*"content":"m6"[^}]*\}\],"total_count":7,"has_more":true\}$',
 '^\{"messages":\[\{[^}]*"content":"m4"[^}]*\},\{[^}]*"content":"m5"[^}]*\}\],"total_count":7,"has_more":true\}$']



=== TEST 14: C5 validation and room checks
--- request eval
['GET /api/messages/$TEST_NGINX_AC?limit=0', 'GET /api/messages/$TEST_NGINX_AC?limit=101',
 'GET /api/messages/$TEST_NGINX_AC?skip=-1', 'GET /api/messages/x?limit=y&skip=z',
 'GET /api/messages/0', 'GET /api/messages/$TEST_NGINX_NOROOM',
 'GET /api/messages/read']
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code eval
[422, 422, 422, 422, 422, 404, 422]
--- response_body eval
['{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}}]}',
 '{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 100","input":"101","ctx":{"le":100}}]}',
 '{"detail":[{"type":"greater_than_equal","loc":["query","skip"],"msg":"Input should be greater than or equal to 0","input":"-1","ctx":{"ge":0}}]}',
 '{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"},{"type":"int_parsing","loc":["query","limit"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"y"},{"type":"int_parsing","loc":["query","skip"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"z"}]}',
 '{"detail":{"error":"validation_error","message":"room_id must be a positive integer","validation_errors":[{"field":"room_id","message":"Must be a positive integer","value":0}],"status_code":422}}',
 '{"detail":{"error":"resource_not_found","message":"Chat room not found","details":{"resource":"Chat room"},"status_code":404}}',
 '{"detail":[{"type":"int_parsing","loc":["path","room_id"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"read"}]}']



=== TEST 15: C5 of someone else's room
--- request
GET /api/messages/$TEST_NGINX_AC
--- more_headers
Authorization: Bearer $TEST_NGINX_B_TOKEN
--- error_code: 403
--- response_body chomp
{"detail":{"error":"authorization_error","message":"Access denied to this chat room","details":null,"status_code":403}}



=== TEST 16: C8 edits the author's message
--- init
my ($s, $page) = ChatStack::api(GET => "/api/messages/$ENV{TEST_NGINX_AC}?limit=1&skip=6",
                                $ENV{TEST_NGINX_A_TOKEN});
my $m = $page->{messages}[0];
$m->{content} eq 'm0' or die "m0: $s\n";
$ENV{TEST_NGINX_M0} = $m->{id};
$ENV{TEST_NGINX_M0_AT} = $m->{created_at};
--- request
PUT /api/messages/$TEST_NGINX_M0
{"content":"m0, edited"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: ^\{"id":"$TEST_NGINX_M0","user_id":$TEST_NGINX_A,"room_id":$TEST_NGINX_AC,"room_type":"private","content":"m0, edited","message_type":"text","file_url":null,"file_name":null,"file_size":null,"file_type":null,"is_deleted":false,"deleted_at":null,"is_edited":true,"edited_at":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?)","created_at":"$TEST_NGINX_M0_AT","updated_at":"\1","read_by":null,"is_read":null\}$



=== TEST 17: the page shows the edit, in place
--- request
GET /api/messages/$TEST_NGINX_AC?skip=5
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 200
--- response_body_like: ^\{"messages":\[\{"id":"$TEST_NGINX_M0",[^}]*"content":"m0, edited",[^}]*"is_edited":true,"edited_at":"\d{4}-[^"]+",[^}]*\},\{[^}]*"content":"m1"[^}]*\}\],"total_count":7,"has_more":false\}$



=== TEST 18: a second edit
--- request
PUT /api/messages/$TEST_NGINX_M0
{"content":"m0, edited twice"}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: "content":"m0, edited twice".*"is_edited":true



=== TEST 19: C8 errors: schema first, then 404, 403, 400
--- request eval
['PUT /api/messages/nope
{}',
'PUT /api/messages/nope
{"content":"x"}',
'PUT /api/messages/$TEST_NGINX_NOMSG
{"content":"x"}',
'PUT /api/messages/read
{"content":"x"}',
'PUT /api/messages/$TEST_NGINX_M0
{"content":"x"}',
'PUT /api/messages/$TEST_NGINX_M0
{"content":" "}']
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code eval
[422, 404, 404, 404, 403, 403]
--- response_body eval
['{"detail":[{"type":"missing","loc":["body","content"],"msg":"Field required","input":{}}]}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"authorization_error","message":"You can only edit your own messages","details":null,"status_code":403}}',
 '{"detail":{"error":"authorization_error","message":"You can only edit your own messages","details":null,"status_code":403}}']



=== TEST 20: whitespace only in an edit
--- request
PUT /api/messages/$TEST_NGINX_M0
{"content":" \n "}
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 400
--- response_body chomp
{"detail":{"error":"INVALID_INPUT","message":"Message content cannot be empty","details":null,"status_code":400}}



=== TEST 21: C9 of someone else's message
--- request
DELETE /api/messages/$TEST_NGINX_M0
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 403
--- response_body chomp
{"detail":{"error":"authorization_error","message":"You can only delete your own messages","details":null,"status_code":403}}



=== TEST 22: C9 deletes, once
--- request eval
['DELETE /api/messages/$TEST_NGINX_M0', 'DELETE /api/messages/$TEST_NGINX_M0']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[200, 400]
--- response_body eval
['{"message":"Message deleted"}',
 '{"detail":{"error":"MESSAGE_ALREADY_DELETED","message":"Message is already deleted","details":null,"status_code":400}}']



=== TEST 23: MessageDeleted; gone from pages and counts
--- init
my ($key, $v) = main::event_with('message.events', "\"message_id\": \"$ENV{TEST_NGINX_M0}\", \"room_id\": $ENV{TEST_NGINX_AC}, \"deleted_by\"");
$key eq $ENV{TEST_NGINX_AC} or die "key: $key\n";
$v =~ /^\{"timestamp": "[^"]+", "message_id": "$ENV{TEST_NGINX_M0}", "room_id": $ENV{TEST_NGINX_AC}, "deleted_by": $ENV{TEST_NGINX_A}, "__event_type__": "MessageDeleted"\}$/
    or die "event: $v\n";
--- request
GET /api/messages/$TEST_NGINX_AC?skip=5
--- more_headers
Authorization: Bearer $TEST_NGINX_C_TOKEN
--- error_code: 200
--- response_body_like: ^\{"messages":\[\{[^}]*"content":"m1"[^}]*\}\],"total_count":6,"has_more":false\}$



=== TEST 24: a deleted message cannot be edited, even to whitespace
--- request eval
['PUT /api/messages/$TEST_NGINX_M0
{"content":"back"}',
'PUT /api/messages/$TEST_NGINX_M0
{"content":"  "}']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[400, 400]
--- response_body eval
['{"detail":{"error":"MESSAGE_ALREADY_DELETED","message":"Cannot edit a deleted message","details":null,"status_code":400}}',
 '{"detail":{"error":"MESSAGE_ALREADY_DELETED","message":"Cannot edit a deleted message","details":null,"status_code":400}}']



=== TEST 25: C9 of ids that name no message
--- request eval
['DELETE /api/messages/$TEST_NGINX_NOMSG', 'DELETE /api/messages/12345',
 'DELETE /api/messages/zzzzzzzzzzzzzzzzzzzzzzzz']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[404, 404, 404]
--- response_body eval
['{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}',
 '{"detail":{"error":"resource_not_found","message":"Message not found","details":{"resource":"Message"},"status_code":404}}']



=== TEST 26: the newest message left is the room's last message
--- init
my ($s, $page) = ChatStack::api(GET => "/api/messages/$ENV{TEST_NGINX_AC}?limit=1",
                                $ENV{TEST_NGINX_A_TOKEN});
my $m = $page->{messages}[0];
$m->{content} eq 'm6' or die "m6: $s\n";
($s) = ChatStack::api(DELETE => "/api/messages/$m->{id}",
                      $ENV{TEST_NGINX_A_TOKEN});
$s == 200 or die "delete m6: $s\n";
--- request
GET /api/chat-rooms/$TEST_NGINX_AC
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code: 200
--- response_body_like: "last_message":\{"id":"[0-9a-f]{24}","user_id":$TEST_NGINX_C,"content":"m5","message_type":"text","created_at":"[^"]+"\},"unread_count":3\}$



=== TEST 27: the message endpoints want a token
--- request eval
['GET /api/messages/1', 'PUT /api/messages/1
{"content":"x"}', 'DELETE /api/messages/1',
 'POST /api/messages/1
{"content":"x"}']
--- error_code eval
[401, 401, 401, 401]



=== TEST 28: wrong methods
--- request eval
['PATCH /api/messages/1', 'PUT /api/messages/room/1/unread-count',
 'GET /api/messages']
--- more_headers
Authorization: Bearer $TEST_NGINX_A_TOKEN
--- error_code eval
[405, 405, 404]
