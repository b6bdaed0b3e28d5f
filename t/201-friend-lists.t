# Friend service lists: friends (F3) and pending requests (F4) with their
# shapes and order, read fresh on every call, and the search (F6).

use strict;
use warnings;

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

our $Secret = $ENV{TEST_NGINX_JWT_SECRET} // 'change-me-nginx-chat-secret';

# a users row and a token; %opt: username, email, active, display_name,
# status_message, online, last_seen_at
sub new_user {
    my (%opt) = @_;
    my $name = $opt{username} // unique_name('fl');
    my $email = $opt{email} // "$name\@example.com";
    my $q = sub { defined $_[0] ? "'$_[0]'" : 'NULL' };
    my $id = sql("INSERT INTO users (email, password_hash, username, "
        . "display_name, status_message, is_online, last_seen_at, is_active, "
        . "created_at, updated_at) VALUES ('$email', 'x', '$name', "
        . $q->($opt{display_name}) . ", " . $q->($opt{status_message})
        . ", " . ($opt{online} // 0) . ", " . $q->($opt{last_seen_at})
        . ", " . ($opt{active} // 1) . ", UTC_TIMESTAMP(), UTC_TIMESTAMP()); "
        . "SELECT LAST_INSERT_ID()");
    die "no user id: $id\n" unless $id =~ /^\d+$/;
    my $token = make_jwt({ alg => 'HS256', typ => 'JWT' },
                         { sub => "$id", email => $email, type => 'access',
                           exp => time() + 3600 }, $Secret);
    return { id => $id, name => $name, token => $token };
}

# a friendships row as the original writes it; returns its id
sub friendship {
    my ($from, $to, $status, $deleted) = @_;
    return sql("INSERT INTO friendships (user_id_1, user_id_2, status, "
        . "created_at, updated_at, deleted_at) VALUES ($from->{id}, "
        . "$to->{id}, '$status', '2026-02-03 04:05:06', "
        . "'2026-02-03 04:05:06', " . ($deleted ? 'UTC_TIMESTAMP()' : 'NULL')
        . "); SELECT LAST_INSERT_ID()");
}

sub export {
    my ($var, $user) = @_;
    $ENV{"TEST_NGINX_$var"} = $user->{id};
    $ENV{"TEST_NGINX_${var}_NAME"} = $user->{name};
    $ENV{"TEST_NGINX_${var}_TOKEN"} = $user->{token};
}

# --- F3/F4: P and six others, ids ascending U1 .. U6; the friendships are
# made in an order unlike the ids, so each list's own order shows

my $p = new_user();
my @u = map { new_user() } 1 .. 6;
export('P', $p);
export("U$_", $u[$_ - 1]) for 1 .. 6;
export('LONELY', new_user());

friendship($u[3], $p, 'accepted');                      # U4 -> P friends
friendship($p, $u[1], 'accepted');                      # P -> U2 friends
$ENV{TEST_NGINX_F3} = friendship($u[2], $p, 'pending'); # U3 -> P
$ENV{TEST_NGINX_F4} = friendship($p, $u[4], 'pending'); # P -> U5
friendship($u[0], $p, 'pending', 1);                    # U1 -> P, deleted
$ENV{TEST_NGINX_F6} = friendship($u[5], $p, 'pending'); # U6 -> P
$ENV{TEST_NGINX_F7} = friendship($p, $u[0], 'pending'); # P -> U1

# --- F6: $Tok in some usernames and emails, in either case

my $tok = unique_name('tok');
my $searcher = new_user(username => "me$tok");
my $s1 = new_user(username => "a$tok", display_name => 'Zoë',
                  status_message => 'busy "now"', online => 1,
                  last_seen_at => '2026-03-04 05:06:07');
my $s2 = new_user(username => 'B' . uc($tok));
my $s3 = new_user(username => unique_name('plain'),
                  email => "x.$tok\@example.com");
my $s4 = new_user(username => "off$tok", active => 0);
my $s5 = new_user(username => "friend$tok");
my $s6 = new_user(username => "pend$tok");
friendship($s5, $searcher, 'accepted');
friendship($searcher, $s6, 'pending');

$ENV{TEST_NGINX_TOK} = $tok;
$ENV{TEST_NGINX_TOK_UC} = uc $tok;
export('ME', $searcher);
export("S$_", (undef, $s1, $s2, $s3, $s4, $s5, $s6)[$_]) for 1 .. 6;

# "%" and "_" are characters, not wildcards
($ENV{TEST_NGINX_TOK_UNDERSCORE} = $tok) =~ s/^(.)./$1_/;
$ENV{TEST_NGINX_LONG_QUERY} = 'q' x 51;

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

run_tests();

__DATA__

=== TEST 1: F3 nobody's friend: an empty array
--- config
location /api/friends { chat_friend; }
--- request
GET /api/friends/list
--- more_headers
Authorization: Bearer $TEST_NGINX_LONELY_TOKEN
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body chomp
[]



=== TEST 2: F4 no requests: two empty arrays
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_LONELY_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[],"sent_requests":[]}



=== TEST 3: F3 friends of either direction, ascending friend id
--- request
GET /api/friends/list
--- more_headers
Authorization: Bearer $TEST_NGINX_P_TOKEN
--- error_code: 200
--- response_body chomp
[{"user_id":$TEST_NGINX_U2,"username":"$TEST_NGINX_U2_NAME","email":"","last_seen_at":null},{"user_id":$TEST_NGINX_U4,"username":"$TEST_NGINX_U4_NAME","email":"","last_seen_at":null}]



=== TEST 4: F4 pending only, both ways, ascending friendship id
--- request
GET /api/friends/requests
--- more_headers
Authorization: Bearer $TEST_NGINX_P_TOKEN
--- error_code: 200
--- response_body chomp
{"received_requests":[{"friendship_id":$TEST_NGINX_F3,"user_id":$TEST_NGINX_U3,"username":"$TEST_NGINX_U3_NAME","email":"","status":"pending","created_at":"2026-02-03T04:05:06","request_type":"received"},{"friendship_id":$TEST_NGINX_F6,"user_id":$TEST_NGINX_U6,"username":"$TEST_NGINX_U6_NAME","email":"","status":"pending","created_at":"2026-02-03T04:05:06","request_type":"received"}],"sent_requests":[{"friendship_id":$TEST_NGINX_F4,"user_id":$TEST_NGINX_U5,"username":"$TEST_NGINX_U5_NAME","email":"","status":"pending","created_at":"2026-02-03T04:05:06","request_type":"sent"},{"friendship_id":$TEST_NGINX_F7,"user_id":$TEST_NGINX_U1,"username":"$TEST_NGINX_U1_NAME","email":"","status":"pending","created_at":"2026-02-03T04:05:06","request_type":"sent"}]}



=== TEST 5: F4 the other side of the same rows
--- request eval
["GET /api/friends/requests", "GET /api/friends/requests"]
--- more_headers eval
["Authorization: Bearer $ENV{TEST_NGINX_U3_TOKEN}",
 "Authorization: Bearer $ENV{TEST_NGINX_U1_TOKEN}"]
--- error_code eval
[200, 200]
--- response_body eval
["{\"received_requests\":[],\"sent_requests\":[{\"friendship_id\":$ENV{TEST_NGINX_F3},\"user_id\":$ENV{TEST_NGINX_P},\"username\":\"$ENV{TEST_NGINX_P_NAME}\",\"email\":\"\",\"status\":\"pending\",\"created_at\":\"2026-02-03T04:05:06\",\"request_type\":\"sent\"}]}",
 "{\"received_requests\":[{\"friendship_id\":$ENV{TEST_NGINX_F7},\"user_id\":$ENV{TEST_NGINX_P},\"username\":\"$ENV{TEST_NGINX_P_NAME}\",\"email\":\"\",\"status\":\"pending\",\"created_at\":\"2026-02-03T04:05:06\",\"request_type\":\"received\"}],\"sent_requests\":[]}"]



=== TEST 6: an accept shows in the friends list at once (no cache, DEV-6)
--- request eval
["GET /api/friends/list",
 "PUT /api/friends/status/$ENV{TEST_NGINX_U3}\n{\"action\":\"accept\"}",
 "GET /api/friends/list"]
--- more_headers
Authorization: Bearer $TEST_NGINX_P_TOKEN
--- error_code eval
[200, 200, 200]
--- response_body_like eval
["^\\[\\{\"user_id\":$ENV{TEST_NGINX_U2},.*\\{\"user_id\":$ENV{TEST_NGINX_U4},[^{]*\\}\\]\$",
 '"status":"accepted"',
 "^\\[\\{\"user_id\":$ENV{TEST_NGINX_U2},.*\\{\"user_id\":$ENV{TEST_NGINX_U3},.*\\{\"user_id\":$ENV{TEST_NGINX_U4},[^{]*\\}\\]\$"]



=== TEST 7: HEAD of a list: headers only
--- request
HEAD /api/friends/list
--- more_headers
Authorization: Bearer $TEST_NGINX_P_TOKEN
--- error_code: 200
--- response_headers
Content-Type: application/json
--- response_body chomp



=== TEST 8: F6 case-insensitive, username or email, active, no friends
--- request
GET /api/friends/search?query=$TEST_NGINX_TOK
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code: 200
--- response_body chomp
{"users":[{"id":$TEST_NGINX_S1,"username":"$TEST_NGINX_S1_NAME","display_name":"Zoë","status_message":"busy \"now\"","is_online":true,"last_seen_at":"2026-03-04T05:06:07"},{"id":$TEST_NGINX_S2,"username":"$TEST_NGINX_S2_NAME","display_name":null,"status_message":null,"is_online":false,"last_seen_at":null},{"id":$TEST_NGINX_S3,"username":"$TEST_NGINX_S3_NAME","display_name":null,"status_message":null,"is_online":false,"last_seen_at":null},{"id":$TEST_NGINX_S6,"username":"$TEST_NGINX_S6_NAME","display_name":null,"status_message":null,"is_online":false,"last_seen_at":null}],"total_count":4}



=== TEST 9: F6 limit cuts the page, total_count still counts every match
--- request
GET /api/friends/search?query=$TEST_NGINX_TOK_UC&limit=2
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code: 200
--- response_body_like: ^\{"users":\[\{"id":$TEST_NGINX_S1,[^{}]*\},\{"id":$TEST_NGINX_S2,[^{}]*\}\],"total_count":4\}$



=== TEST 10: F6 "%" and "_" match themselves only
--- request eval
["GET /api/friends/search?query=%25$ENV{TEST_NGINX_TOK}",
 "GET /api/friends/search?query=$ENV{TEST_NGINX_TOK_UNDERSCORE}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code eval
[200, 200]
--- response_body eval
['{"users":[],"total_count":0}', '{"users":[],"total_count":0}']



=== TEST 11: F6 an injection string is only text
--- request
GET /api/friends/search?query=%27%20OR%201%3D1%20--%20
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code: 200
--- response_body chomp
{"users":[],"total_count":0}



=== TEST 12: F6 query is required
--- request
GET /api/friends/search
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"missing","loc":["query","query"],"msg":"Field required","input":null}]}



=== TEST 13: F6 query of 0 and of 51 characters
--- request eval
["GET /api/friends/search?query=",
 "GET /api/friends/search?query=$ENV{TEST_NGINX_LONG_QUERY}"]
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code eval
[422, 422]
--- response_body eval
['{"detail":[{"type":"string_too_short","loc":["query","query"],"msg":"String should have at least 1 character","input":"","ctx":{"min_length":1}}]}',
 "{\"detail\":[{\"type\":\"string_too_long\",\"loc\":[\"query\",\"query\"],\"msg\":\"String should have at most 50 characters\",\"input\":\"$ENV{TEST_NGINX_LONG_QUERY}\",\"ctx\":{\"max_length\":50}}]}"]



=== TEST 14: F6 50 characters are code points, not bytes
--- request eval
"GET /api/friends/search?query=" . ("%C3%A9" x 50)
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code: 200
--- response_body chomp
{"users":[],"total_count":0}



=== TEST 15: F6 limit must be an integer in 1 .. 50
--- request eval
["GET /api/friends/search?query=a&limit=x",
 "GET /api/friends/search?query=a&limit=0",
 "GET /api/friends/search?query=a&limit=51",
 "GET /api/friends/search?query=a&limit=99999999999999999999999"]
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code eval
[422, 422, 422, 422]
--- response_body eval
['{"detail":[{"type":"int_parsing","loc":["query","limit"],"msg":"Input should be a valid integer, unable to parse string as an integer","input":"x"}]}',
 '{"detail":[{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1","input":"0","ctx":{"ge":1}}]}',
 '{"detail":[{"type":"less_than_equal","loc":["query","limit"],"msg":"Input should be less than or equal to 50","input":"51","ctx":{"le":50}}]}',
 qr/^\{"detail":\[\{"type":"[a-z_]+","loc":\["query","limit"\],/]



=== TEST 16: F6 every bad parameter in one 422, in declaration order
--- request
GET /api/friends/search?limit=-1
--- more_headers
Authorization: Bearer $TEST_NGINX_ME_TOKEN
--- error_code: 422
--- response_body chomp
{"detail":[{"type":"missing","loc":["query","query"],"msg":"Field required","input":null},{"type":"greater_than_equal","loc":["query","limit"],"msg":"Input should be greater than or equal to 1","input":"-1","ctx":{"ge":1}}]}
