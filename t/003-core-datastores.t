# One round trip through each datastore client, with parameters that
# would break a string-built statement, and event publishing.

use Test::Nginx::Chat::Blocks 'no_plan';
use ChatStack;

workers(2);
master_on();
no_shuffle();
add_block_preprocessor(\&chat_block);

our $Before = redis_cmd('XLEN', 'diag.events') || 0;

run_tests();

__DATA__

=== TEST 1: MariaDB: a value goes to the server as data
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/mysql?value=hello
--- error_code: 200
--- response_body_like: ^\{"value":"hello","connection":"\d+"\}$



=== TEST 2: MariaDB: injection strings come back literally
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/mysql?value=x'%20OR%20'1'='1%22;%20DROP%20TABLE%20users;%20--%20%5C
--- error_code: 200
--- response_body_like: ^\{"value":"x' OR '1'='1\\"; DROP TABLE users; -- \\\\","connection":"\d+"\}$



=== TEST 3: MariaDB: non-ASCII survives
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/mysql?value=%E2%82%AC%F0%9F%98%80
--- error_code: 200
--- response_body_like: ^\{"value":"€😀","connection":"\d+"\}$



=== TEST 4: MariaDB: no value is SQL NULL
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/mysql
--- error_code: 200
--- response_body_like: ^\{"value":null,"connection":"\d+"\}$



=== TEST 5: MariaDB: many requests share the pool
--- config
location /diag/ { chat_diagnostics; }
--- request eval
[map { "GET /diag/mysql?value=v$_" } 1 .. 20]
--- error_code eval
[(200) x 20]
--- response_body_like eval
[map { "^\\{\"value\":\"v$_\"" } 1 .. 20]



=== TEST 6: Redis: SET then GET in one request
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/redis?value=a%20b%0Ac%22d
--- error_code: 200
--- response_body eval
"{\"value\":\"a b\\nc\\\"d\"}"



=== TEST 7: MongoDB: insert and read back by ObjectId
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/mongo?value=stored%20%E2%9C%93
--- error_code: 200
--- response_body_like: ^\{"id":"[0-9a-f]{24}","value":"stored ✓"\}$



=== TEST 8: bcrypt in the thread pool: $2b$12$, and it verifies
--- config
location /diag/ { chat_diagnostics; }
--- request
GET /diag/bcrypt?password=Secret%231pw
--- error_code: 200
--- response_body_like: ^\{"hash":"\$2b\$12\$[./A-Za-z0-9]{53}","match":true\}$



=== TEST 9: an event lands in its stream with the original's envelope
--- config
location /diag/ { chat_diagnostics; }
--- request
POST /diag/event
{"user_id":7,"name":"Zoë \"Z\"","ok":true,"ids":[1,2],"none":null}
--- error_code: 200
--- response_body chomp
{"detail":"published"}
--- wait: 0.2
--- init
# read after the request by the next block



=== TEST 10: the stream entry has key and value as json.dumps writes them
--- config
location /diag/ { chat_diagnostics; }
--- init
my @entry = split /\n/, ChatStack::redis_cmd('XREVRANGE', 'diag.events',
                                             '+', '-', 'COUNT', '1');
die "no entry\n" unless @entry >= 5;
my ($key, $value) = ($entry[2], $entry[4]);
die "key: $key\n" unless $key eq '1';
$value =~ /^\{"timestamp": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?", "user_id": 7, "name": "Zo\\u00eb \\"Z\\"", "ok": true, "ids": \[1, 2\], "none": null, "__event_type__": "DiagEvent"\}$/
    or die "value: $value\n";
--- request
GET /diag/mysql?value=ok
--- error_code: 200
