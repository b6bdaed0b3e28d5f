# User service, /api/auth: register (U1), login as form and JSON (U2, U3),
# logout (U4), with every error the contract lists.

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

our $Name = unique_name('al');
$ENV{TEST_NGINX_NAME} = $Name;
$ENV{TEST_NGINX_EMAIL} = "$Name\@example.com";
$ENV{TEST_NGINX_UPPER_EMAIL} = "$Name\@EXAMPLE.COM";

# the images' directory (made at start) inside html/: Test::Nginx::Socket
# removes only the directories it made itself from the server root
our $Config = <<'EOF';
chat_user_upload_dir html/uploads;
location /api/ { chat_user; }
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

=== TEST 1: register
--- request
POST /api/auth/register
{"email":"$TEST_NGINX_UPPER_EMAIL","username":"$TEST_NGINX_NAME","password":"Secret#123","display_name":null}
--- error_code: 201
--- response_body_like: ^\{"email":"\w+@example\.com","username":"\w+","display_name":null,"id":\d+,"created_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d","updated_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"\}$
--- no_error_log
[error]



=== TEST 2: the domain was stored lower-cased, the row as the original
--- init
my $row = ChatStack::mysql_cmd("SELECT email, is_online, is_active, "
    . "last_seen_at IS NULL, status_message IS NULL, "
    . "LEFT(password_hash, 7), LENGTH(password_hash) FROM users "
    . "WHERE username = '$main::Name'");
die "row: $row\n"
    unless $row eq "$main::Name\@example.com\t0\t1\t1\t1\t\$2b\$12\$\t60";
--- request
GET /api/users/search
--- error_code: 401



=== TEST 3: the UserRegistered event, display_name falls back to username
--- init
my @e = split /\n/, ChatStack::redis_cmd('XREVRANGE', 'user.events', '+',
                                         '-', 'COUNT', '1');
$e[4] =~ /"username": "$main::Name", "display_name": "$main::Name", "__event_type__": "UserRegistered"\}$/
    or die "event: @e\n";
--- request
GET /api/users/search
--- error_code: 401



=== TEST 4: the same e-mail again, in another case
--- request
POST /api/auth/register
{"email":"$TEST_NGINX_EMAIL","username":"other$TEST_NGINX_NAME","password":"Secret#123"}
--- error_code: 409
--- response_body chomp
{"detail":{"error":"resource_conflict","message":"Email already registered","details":null,"status_code":409}}



=== TEST 5: the same username, in another case
--- request
POST /api/auth/register
{"email":"x$TEST_NGINX_EMAIL","username":"X$TEST_NGINX_NAME","password":"Secret#123"}
--- error_code: 201



=== TEST 6: usernames are unique ignoring case
--- request
POST /api/auth/register
{"email":"y$TEST_NGINX_EMAIL","username":"x$TEST_NGINX_NAME","password":"Secret#123"}
--- error_code: 409
--- response_body chomp
{"detail":{"error":"resource_conflict","message":"Username already taken","details":null,"status_code":409}}



=== TEST 7: missing fields, all at once
--- request
POST /api/auth/register
{"display_name":"x"}
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"missing","loc":["body","email"],"msg":"Field required","input":{"display_name":"x"}},{"type":"missing","loc":["body","username"],"msg":"Field required","input":{"display_name":"x"}},{"type":"missing","loc":["body","password"],"msg":"Field required","input":{"display_name":"x"}}]}



=== TEST 8: wrong types
--- request
POST /api/auth/register
{"email":5,"username":["a"],"password":true,"display_name":7}
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"string_type","loc":["body","email"],"msg":"Input should be a valid string","input":5},{"type":"string_type","loc":["body","username"],"msg":"Input should be a valid string","input":["a"]},{"type":"string_type","loc":["body","password"],"msg":"Input should be a valid string","input":true},{"type":"string_type","loc":["body","display_name"],"msg":"Input should be a valid string","input":7}]}



=== TEST 9: lengths count code points
--- request
POST /api/auth/register
{"email":"ok@example.com","username":"ab","password":"ääääääääääääääääää","display_name":"ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé"}
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"string_too_short","loc":["body","username"],"msg":"String should have at least 3 characters","input":"ab","ctx":{"min_length":3}},{"type":"string_too_long","loc":["body","password"],"msg":"String should have at most 16 characters","input":"ääääääääääääääääää","ctx":{"max_length":16}}]}



=== TEST 10: 100 code points of display name are fine, 101 are not
--- request eval
"POST /api/auth/register\n"
. qq({"email":"a\@example.com","username":"abc","password":"x","display_name":") . ("é" x 101) . qq("})
--- error_code: 422
--- response_body_like: "loc":\["body","display_name"\],"msg":"String should have at most 100 characters"



=== TEST 11: a schema-level bad e-mail
--- request
POST /api/auth/register
{"email":"not-an-email","username":"abc","password":"Secret#123"}
--- error_code: 422
--- response_body_like: ^\{"detail":\[\{"type":"value_error","loc":\["body","email"\],"msg":"value is not a valid email address","input":"not-an-email","ctx":\{"reason":"[^"]+"\}\}\]\}$



=== TEST 12: special-use domains are refused
--- request
POST /api/auth/register
{"email":"a@host.localhost","username":"abc","password":"Secret#123"}
--- error_code: 422
--- response_body_like: "type":"value_error"



=== TEST 13: application rules, every failure reported
--- request
POST /api/auth/register
{"email":"a+b@exämple.com","username":"_bad name","password":"abcdefgh"}
--- error_code: 422
--- response_body_like: "type":"value_error"



=== TEST 14: application rules (E-B'), all of them together
--- request
POST /api/auth/register
{"email":"a@example.c0m","username":"-bad.name","password":"        "}
--- error_code: 422
--- response_body chomp
{"detail":{"error":"validation_error","message":"Multiple validation errors","validation_errors":[{"field":"email","message":"Invalid email format","value":"a@example.c0m"},{"field":"username","message":"Username can only contain letters, numbers, underscores, and hyphens","value":"-bad.name"},{"field":"username","message":"Username must start with a letter or number","value":"-bad.name"},{"field":"password","message":"Password must contain at least one letter","value":null},{"field":"password","message":"Password must contain at least one digit","value":null},{"field":"password","message":"Password must contain at least one special character","value":null}],"status_code":422}}



=== TEST 15: SQL injection strings are data
--- request
POST /api/auth/register
{"email":"o'brien@example.com","username":"x'); DROP TABLE users; --","password":"Secret#123"}
--- error_code: 422
--- response_body_like: "message":"Username can only contain letters



=== TEST 16: an injection string in the display name is stored literally
--- request eval
my $n = $main::Name;
"POST /api/auth/register\n"
. '{"email":"inj' . $n . '@example.com","username":"inj' . $n
. '","password":"Secret#123","display_name":"Robert\'); DROP TABLE users;-- \\\\ \\" %"}'
--- error_code: 201
--- response_body_like: "display_name":"Robert'\); DROP TABLE users;-- \\\\ \\" %"



=== TEST 17: malformed JSON is a 422 even before anything else
--- request
POST /api/auth/register
{"email": "a@example.com",
--- error_code: 422
--- response_body_like: "type":"json_invalid"



=== TEST 18: invalid UTF-8 in a string
--- request eval
"POST /api/auth/register\n{\"email\":\"a\@example.com\",\"username\":\"ab\xff\xfe\",\"password\":\"Secret#123\"}"
--- error_code: 422
--- response_body_like: "type":"string_unicode","loc":\["body","username"\]



=== TEST 19: login with the OAuth2 form (the username field holds the e-mail)
--- request
POST /api/auth/login
username=$TEST_NGINX_EMAIL&password=Secret%23123&grant_type=password
--- more_headers
Content-Type: application/x-www-form-urlencoded
--- error_code: 200
--- response_body_like: ^\{"access_token":"[\w-]+\.[\w-]+\.[\w-]+","token_type":"bearer","expires_in":7200\}$



=== TEST 20: presence and the online flag after login
--- init
my $id = ChatStack::mysql_cmd("SELECT id FROM users WHERE username = '$main::Name'");
my $v = ChatStack::redis_cmd('GET', "user:online:$id");
$v =~ /^login_${id}_eyJhbGciOi$/ or die "presence: $v\n";
my $ttl = ChatStack::redis_cmd('TTL', "user:online:$id");
die "ttl $ttl\n" unless $ttl > 3500 && $ttl <= 3600;
my $online = ChatStack::mysql_cmd("SELECT is_online FROM users WHERE id = $id");
die "is_online $online\n" unless $online eq '1';
my @e = split /\n/, ChatStack::redis_cmd('XREVRANGE', 'user.online_status',
                                         '+', '-', 'COUNT', '1');
$e[2] eq $id && $e[4] =~ /"user_id": $id, "is_online": true, "__event_type__": "UserOnlineStatusChanged"\}$/
    or die "event: @e\n";
--- request
GET /api/users/search
--- error_code: 401



=== TEST 21: login as JSON, e-mail in another case
--- request
POST /api/auth/login/json
{"email":"$TEST_NGINX_UPPER_EMAIL","password":"Secret#123"}
--- error_code: 200
--- response_body_like: ^\{"access_token":"[^"]+","token_type":"bearer","expires_in":7200\}$



=== TEST 22: wrong password and unknown e-mail get the same answer
--- request eval
["POST /api/auth/login/json\n{\"email\":\"$ENV{TEST_NGINX_EMAIL}\",\"password\":\"Wrong#123\"}",
 "POST /api/auth/login/json\n{\"email\":\"nobody$ENV{TEST_NGINX_EMAIL}\",\"password\":\"Secret#123\"}",
 "POST /api/auth/login\nusername=nobody$ENV{TEST_NGINX_EMAIL}&password=x"]
--- error_code eval
[401, 401, 401]
--- response_body eval
[('{"detail":{"error":"authentication_error","message":"Invalid email or password","details":null,"status_code":401}}') x 3]
--- response_headers eval
["!WWW-Authenticate", "!WWW-Authenticate", "!WWW-Authenticate"]



=== TEST 23: the form login with a JSON body: both fields missing
--- request
POST /api/auth/login
{"username":"a@example.com","password":"x"}
--- more_headers
Content-Type: application/json
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"missing","loc":["body","username"],"msg":"Field required","input":null},{"type":"missing","loc":["body","password"],"msg":"Field required","input":null}]}



=== TEST 24: the form login: grant_type must be "password"
--- request
POST /api/auth/login
username=a@example.com&password=x&grant_type=client_credentials
--- error_code: 422
--- response_body_like: "type":"string_pattern_mismatch","loc":\["body","grant_type"\]



=== TEST 25: blank password, bad e-mail format (E-B')
--- request eval
["POST /api/auth/login/json\n{\"email\":\"a\@example.com\",\"password\":\"   \"}",
 "POST /api/auth/login\nusername=not-an-email&password=x"]
--- error_code eval
[422, 422]
--- response_body eval
['{"detail":{"error":"validation_error","message":"Multiple validation errors","validation_errors":[{"field":"password","message":"This field is required","value":null}],"status_code":422}}',
 '{"detail":{"error":"validation_error","message":"Multiple validation errors","validation_errors":[{"field":"username","message":"Invalid email format","value":null}],"status_code":422}}']



=== TEST 26: a huge password is an ordinary failed login
--- request eval
"POST /api/auth/login/json\n{\"email\":\"$ENV{TEST_NGINX_EMAIL}\",\"password\":\"" . ("x" x 5000) . "\"}"
--- error_code: 401



=== TEST 27: logout: the token stops working, presence goes
--- init
my ($s, $b) = ChatStack::api(POST => '/api/auth/login/json', undef,
    { email => $ENV{TEST_NGINX_EMAIL}, password => 'Secret#123' });
die "login $s\n" unless $s == 200;
$ENV{TEST_NGINX_TOKEN} = $b->{access_token};
--- request eval
["POST /api/auth/logout", "GET /api/profile/me", "POST /api/auth/logout"]
--- more_headers
Authorization: Bearer $TEST_NGINX_TOKEN
--- error_code eval
[200, 401, 401]
--- response_body_like eval
['^\{"message":"Successfully logged out","user_id":\d+\}$',
 '^\{"detail":"Not authenticated"\}$', '^\{"detail":"Not authenticated"\}$']



=== TEST 28: after logout: offline, last seen set, event
--- init
my $id = ChatStack::mysql_cmd("SELECT id FROM users WHERE username = '$main::Name'");
my $v = ChatStack::redis_cmd('EXISTS', "user:online:$id");
die "presence left: $v\n" unless $v eq '0';
my $row = ChatStack::mysql_cmd("SELECT is_online, last_seen_at IS NOT NULL FROM users WHERE id = $id");
die "row: $row\n" unless $row eq "0\t1";
--- request
POST /api/auth/logout
--- error_code: 401
--- response_headers
WWW-Authenticate: Bearer



=== TEST 29: a valid token of a user that does not exist
--- init
$ENV{TEST_NGINX_GHOST} = ChatStack::user_token(2000000000);
--- request
POST /api/auth/logout
--- more_headers
Authorization: Bearer $TEST_NGINX_GHOST
--- error_code: 404
--- response_body chomp
{"detail":"User not found"}



=== TEST 30: a token signed with another secret at a user endpoint
--- init
my $id = ChatStack::mysql_cmd("SELECT id FROM users WHERE username = '$main::Name'");
$ENV{TEST_NGINX_T1} = ChatStack::make_jwt({alg => 'HS256', typ => 'JWT'},
    {sub => "$id", type => 'access', exp => time() + 600}, 'wrong secret');
$ENV{TEST_NGINX_T2} = ChatStack::user_token($id, undef, exp => time() - 1);
$ENV{TEST_NGINX_T3} = ChatStack::make_jwt({alg => 'none', typ => 'JWT'},
    {sub => "$id", type => 'access', exp => time() + 600}, '');
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_T1
--- error_code: 401



=== TEST 30a: an expired token
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_T2
--- error_code: 401



=== TEST 30b: alg none
--- request
GET /api/profile/me
--- more_headers
Authorization: Bearer $TEST_NGINX_T3
--- error_code: 401



=== TEST 31: unknown path and method
--- request eval
["GET /api/auth/register", "GET /api/auth/nothing", "DELETE /api/profile/me"]
--- error_code eval
[405, 404, 405]
--- response_body eval
['{"detail":"Method Not Allowed"}', '{"detail":"Not Found"}',
 '{"detail":"Method Not Allowed"}']
