# Self-test of our block harness (Test::Nginx::Chat::Socket) and the
# helpers in t/lib, using stock nginx features only.
# Run: prove -I t/lib -v t/000-harness.t

use Test::Nginx::Chat::Socket 'no_plan';
use Test::Nginx::Chat qw(:all);
use Test::Nginx::Chat::Exchange qw(http_call wait_any);
use IO::Socket::INET;
use POSIX ();
use Socket ();
use Time::HiRes qw(time sleep);

workers(2);
master_on();
no_shuffle();
repeat_each(2);

# Default http_config for blocks without one.
add_block_preprocessor(sub {
    my $block = shift;
    $block->set_value(http_config => "add_header X-Default-Http yes;")
        unless defined $block->http_config;
});

# ---------------------------------------------------------------------------
# Parser unit checks (no nginx involved)

{
    my $wire = "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
    my ($body, $done, $used) = decode_chunked($wire);
    is $body, 'hello world', 'decode_chunked: body';
    ok $done, 'decode_chunked: complete';
    is substr($wire, $used), 'NEXT', 'decode_chunked: consumed up to the trailer end';

    ($body, $done) = decode_chunked("5\r\nhel");
    is $body, 'hel', 'decode_chunked: partial body';
    ok !$done, 'decode_chunked: partial is incomplete';

    my $r = parse_http_response("HTTP/1.1 100 Continue\r\n\r\n"
        . "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
        . "3\r\nabc\r\n0\r\n\r\n");
    is $r->{status}, 200, 'parse_http_response: 1xx skipped';
    is $r->{body}, 'abc', 'parse_http_response: chunked body';
    is $r->{headers}{'x-a'}, '1, 2', 'parse_http_response: repeated headers joined';
    ok $r->{complete}, 'parse_http_response: complete';

    $r = parse_http_response("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    ok !$r->{complete}, 'parse_http_response: short Content-Length body incomplete';
    ok !defined parse_http_response("HTTP/1.1 200 OK\r\nContent-"),
        'parse_http_response: undef until the header block is complete';
    $r = parse_http_response("HTTP/1.0 200 OK\r\n\r\nuntil close", eof => 1);
    ok $r->{complete} && $r->{body} eq 'until close', 'parse_http_response: read until close';
}

# Expectations per response: with several requests in a block an array,
# one value for all is refused (as Test::Nginx::Socket refuses it).
{
    my $b = Test::Base::Block->new;
    $b->set_value(error_code => [200, 404]);
    $b->set_value(response_body => "x\n");
    my $expect = \&Test::Nginx::Chat::Socket::_expect;
    is $expect->($b, 'error_code', 1, 1), 404, '_expect: array element';
    is $expect->($b, 'response_body', 0, 0), "x\n", '_expect: one request';
    ok !eval { $expect->($b, 'response_body', 1, 1); 1 },
        '_expect: one value for several requests is refused';
    like $@, qr/^--- response_body: one value for several requests/,
        '_expect: the message names the section';
    ok !defined $expect->($b, 'response_body_like', 1, 1),
        '_expect: an absent section is no error';
}

# ---------------------------------------------------------------------------
# A TCP listener that never answers, for timeout tests.

my $blackhole = IO::Socket::INET->new(
    Listen => 64, LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
) or die "cannot listen: $!";
$ENV{TEST_NGINX_BLACKHOLE_PORT} = $blackhole->sockport;
$ENV{TEST_NGINX_PAD} = 'x' x 3000;
$ENV{TEST_NGINX_EV2} = 'retry: 10\nevent: y\ndata: c\n\n';    # nginx expands \n

# ---------------------------------------------------------------------------
# Scenario checks against a second, independent nginx (master off).

{
    my $node = start_nginx_with(
        config => <<'_EOC_',
        location = /hello { return 200 "hello from $server_port\n"; }
        location = /len { return 200 "len=$content_length\n"; }
        location = /events {
            default_type text/event-stream;
            return 200 "event: x\nid: 1\ndata: a\ndata: b\n\n: ping\n\n$TEST_NGINX_EV2";
        }
        location = /chunked.sse {
            default_type text/event-stream;
            sub_filter 'TYPE' 'event';
            sub_filter_once off;
            sub_filter_types *;
        }
        location = /slow {
            # The first 1001 bytes (headers, first event, part of a comment)
            # are sent at once, then 1 byte per second.
            default_type text/event-stream;
            limit_rate_after 1000;
            limit_rate 1;
            return 200 "event: first\ndata: 1\n\n:${TEST_NGINX_PAD}\n\nevent: second\ndata: 2\n\n";
        }
        location = /stall { proxy_pass http://127.0.0.1:$TEST_NGINX_BLACKHOLE_PORT; }
_EOC_
        user_files => { 'chunked.sse' => "TYPE: one\ndata: 1\n\nTYPE: two\ndata: 2\n\n" },
    );
    my $port = $node->port;
    ok $node->pid && kill(0, $node->pid), 'start_nginx_with: nginx running';
    isnt $port, server_port(), 'start_nginx_with: own port';

    my $res = http_request(GET => $node->url('/hello'));
    is $res->{status}, 200, 'http_request: status';
    is $res->{body}, "hello from $port\n", 'http_request: body';
    is $res->{headers}{'content-type'}, 'text/plain', 'http_request: lower-cased headers';
    ok $res->{elapsed} > 0 && $res->{elapsed} < 2, "http_request: elapsed ($res->{elapsed})";

    $res = http_request(POST => "http://127.0.0.1:$port/len", { 'X-A' => 1 }, 'hello');
    is $res->{body}, "len=5\n", 'http_request: POST body with Content-Length';

    $res = http_request(GET => $node->url('/stall'), {}, undef, 0.5);
    ok !defined $res->{status} && $res->{timed_out}, 'http_request: timeout';
    ok $res->{elapsed} >= 0.45 && $res->{elapsed} < 1.5,
        "http_request: elapsed close to the timeout ($res->{elapsed})";

    $res = http_request(GET => 'http://127.0.0.1:' . free_port() . '/', {}, undef, 1);
    ok !defined $res->{status} && $res->{error}, 'http_request: connection refused';

    my $sse = sse_open('/events', {}, $port);
    is $sse->status, 200, 'sse_open: status';
    is $sse->headers->{'content-type'}, 'text/event-stream', 'sse_open: headers';
    is_deeply $sse->read_event(1), { event => 'x', id => '1', data => "a\nb" },
        'read_event: multi-line data';
    is_deeply $sse->read_event(1, { comments => 1 }), { comment => 'ping' },
        'read_event: comment when asked';
    is_deeply $sse->read_event(1), { retry => '10', event => 'y', data => 'c' },
        'read_event: second event';
    my $t0 = time;
    ok !defined $sse->read_event(2), 'read_event: undef at end of stream';
    ok time - $t0 < 0.5, 'read_event: does not wait at end of stream';
    $sse->close;

    $sse = sse_open('/chunked.sse', {}, $port);
    is $sse->headers->{'transfer-encoding'}, 'chunked', 'sse_open: chunked stream';
    is_deeply [map { $sse->read_event(1) } 1 .. 2],
        [{ event => 'one', data => '1' }, { event => 'two', data => '2' }],
        'read_event: events from a chunked stream';
    $sse->close;

    $sse = sse_open('/slow', {}, $port);
    is_deeply $sse->read_event(2), { event => 'first', data => '1' }, 'read_event: first event';
    $t0 = time;
    ok !defined $sse->read_event(0.5, { comments => 1 }), 'read_event: timeout';
    my $waited = time - $t0;
    ok $waited >= 0.45 && $waited < 1, "read_event: returned after the timeout ($waited)";
    $sse->close;

    my $pid = $node->pid;
    stop_nginx($node);
    ok !kill(0, $pid), 'stop_nginx: process gone';
    ok !Test::Nginx::Chat::Process::port_is_listening($port), 'stop_nginx: port released';
}

# ---------------------------------------------------------------------------
# Test::Nginx::Chat::Exchange: how a request ended, against a scripted
# server (one connection each) and stock nginx.

{
    # a listener whose child process treats one connection as $script says
    my $scripted = sub {
        my ($script) = @_;
        my $l = IO::Socket::INET->new(Listen => 8, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp',
                                      ReuseAddr => 1)
            or die "cannot listen: $!";
        my $port = $l->sockport;
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            alarm 5;
            my $c = $l->accept;
            if ($script eq 'reset') {
                setsockopt($c, Socket::SOL_SOCKET(), Socket::SO_LINGER(),
                           pack('ii', 1, 0));
                close $c;
            } elsif ($script ne 'close') {
                my $req = '';
                $req .= $_ while defined($_ = <$c>) && $_ ne "\r\n";
                print {$c} $script;
                sleep 0.2;
                close $c;
            }
            POSIX::_exit(0);
        }
        close $l;
        return ($port, $pid);
    };
    my $url = sub { "http://127.0.0.1:$_[0]/x" };

    my ($port, $pid) = $scripted->('');
    my $r = http_call(url => $url->($port), timeout => 2);
    is $r->{outcome}, 'cut', 'exchange: closed after the request: cut';
    ok $r->{written}, 'exchange: cut: the request was written';
    waitpid $pid, 0;

    ($port, $pid) = $scripted->("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    $r = http_call(url => $url->($port), timeout => 2);
    is $r->{outcome}, 'truncated', 'exchange: short body: truncated';
    is $r->{status}, 200, 'exchange: truncated: the status is kept';
    waitpid $pid, 0;

    for my $how ('close', 'reset') {
        ($port, $pid) = $scripted->($how);
        my $x = Test::Nginx::Chat::Exchange->new(url => $url->($port), timeout => 2);
        sleep 0.3;    # the server gives up the connection first
        $r = $x->run->result;
        is $r->{outcome}, 'closed_before_write',
            "exchange: $how before the request: closed_before_write";
        ok $r->{retryable} && !$r->{written}, "exchange: $how: may be retried";
        waitpid $pid, 0;
    }

    $r = http_call(url => $url->(free_port()), timeout => 1);
    is $r->{outcome}, 'refused', 'exchange: nothing listening: refused';
    ok $r->{retryable}, 'exchange: refused: may be retried';

    $r = http_call(url => "http://127.0.0.1:$ENV{TEST_NGINX_BLACKHOLE_PORT}/",
                   timeout => 0.5);
    is $r->{outcome}, 'timeout', 'exchange: no answer: timeout';
    ok $r->{elapsed} >= 0.45 && $r->{elapsed} < 1.5,
        "exchange: timeout after the timeout ($r->{elapsed})";

    my $head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
             . "Transfer-Encoding: chunked\r\n\r\n";
    my $chunk = "data: hello\n\n";
    $chunk = sprintf("%x\r\n%s\r\n", length $chunk, $chunk);
    for my $case ([$head . $chunk, 0], [$head . $chunk . "0\r\n\r\n", 1]) {
        ($port, $pid) = $scripted->($case->[0]);
        my $x = Test::Nginx::Chat::Exchange->new(url => $url->($port),
                                                 stream => 1, timeout => 2);
        is $x->run->outcome, 'response', 'exchange: stream header';
        my $sse = $x->sse;
        my @ev;
        while (1) {
            push @ev, $sse->poll_events;
            last if $sse->eof;
            wait_any(1, $sse);
        }
        is_deeply \@ev, [{ data => 'hello' }], 'exchange: stream events';
        is $sse->last_chunk, $case->[1],
            'sse: last_chunk ' . ($case->[1] ? 'seen' : 'missing: closed');
        waitpid $pid, 0;
    }

    my $node = start_nginx_with(config => <<'_EOC_');
        location = /hello { return 200 "hello\n"; }
        location = /stall { proxy_pass http://127.0.0.1:$TEST_NGINX_BLACKHOLE_PORT; }
_EOC_
    my @x = map {
        Test::Nginx::Chat::Exchange->new(url => $node->url($_ % 2 ? '/hello' : '/stall'),
                                         timeout => 0.5)
    } 1 .. 10;
    wait_any(1, @x) while grep { !$_->done } @x;
    is_deeply [map { $_->result->{outcome} . ($_->result->{status} // '') } @x],
        [map { $_ % 2 ? 'response200' : 'timeout' } 1 .. 10],
        'wait_any: ten at once';
    is $x[0]->result->{body}, "hello\n", 'exchange: body';
    stop_nginx($node);
}

# ---------------------------------------------------------------------------

our %seen;    # data shared between init sections: %main::seen there

run_tests();

my $main = Test::Nginx::Chat::Socket::main_instance();
ok !$main->pid, 'main nginx stopped after run_tests';
ok !Test::Nginx::Chat::Process::port_is_listening(server_port()), 'main port released';

__DATA__

=== TEST 1: exact body, default status
--- config
    location = /t { return 200 "hi\n"; }
    location = /a { return 200 "a\n"; }
    location = /b { return 200 "b\n"; }
--- request
    GET /t
--- response_body
hi
--- no_error_log
[error]
[alert]



=== TEST 2: same config, no config section: the server is reused
--- init
$main::seen{pid} = Test::Nginx::Chat::Socket::main_instance()->pid;
--- request
GET /a
--- response_body_like: ^a$
--- response_body_unlike: b



=== TEST 3: reuse check, master and workers
--- init
my $pid = Test::Nginx::Chat::Socket::main_instance()->pid;
::is($pid, $main::seen{pid}, 'TEST 3: same nginx as TEST 2');
my @kids;
for my $stat (glob '/proc/[0-9]*/stat') {
    open my $fh, '<', $stat or next;
    my @f = split ' ', scalar(<$fh>) // '';
    push @kids, $f[0] if @f > 3 && $f[3] == $pid;
}
::is(scalar @kids, 2, 'TEST 3: master with two workers');
--- request
GET /b
--- response_body
b
--- response_headers
X-Default-Http: yes



=== TEST 4: headers present, absent, like, raw
--- config
    location = /h {
        add_header X-Foo bar;
        return 200 "h\n";
    }
--- init
::isnt(Test::Nginx::Chat::Socket::main_instance()->pid, $main::seen{pid},
       'TEST 4: new config restarts nginx');
--- request
GET /h
--- response_headers
X-Foo: bar
Content-Type: text/plain
!X-Bar
! X-Baz
--- response_headers_like
Server: nginx(/[\d.]+)?
Content-Length: \d
--- raw_response_headers_like: ^HTTP/1\.1 200 OK\r\n.*X-Foo: bar\r\n
--- raw_response_headers_unlike: X-Bar



=== TEST 5: more_headers are sent, Host can be overridden
--- config
    location = /hdr { return 200 "foo=$http_x_foo host=$host\n"; }
--- more_headers
X-Foo: some value
Host: example.com
--- request
GET /hdr
--- response_body
foo=some value host=example.com



=== TEST 6: POST body and Content-Length
--- config
    location = /len { return 200 "len=$content_length\n"; }
    location = /echo {
        client_body_in_single_buffer on;
        proxy_set_header X-Body $request_body;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/sink;
    }
    location = /sink { return 200 "body=$http_x_body\n"; }
--- request eval
["POST /len\nhello world\n", "POST /echo\nhello=world", ["POST /echo\nhel", "lo"]]
--- response_body eval
["len=11\n", "body=hello=world\n", "body=hello\n"]



=== TEST 7: several requests, per-request status codes
--- config
    location = /ok { return 200 "ok\n"; }
    location = /moved { return 302 /ok; }
--- request eval
["GET /ok", "GET /nope.html", "GET /moved"]
--- error_code eval
[200, 404, 302]
--- response_body_like eval
["^ok\n\\z", "404 Not Found", "302 Found"]
--- response_headers eval
["!Location", "", "Location: http://localhost:$ENV{TEST_NGINX_SERVER_PORT}/ok"]



=== TEST 8: error_code_like
--- config
    location = /moved { return 301 /x; }
--- request
GET /moved
--- error_code_like: ^30[12]$



=== TEST 9: chunked response (sub_filter drops Content-Length)
--- config
    location = /chunky.txt {
        sub_filter 'world' 'there';
        sub_filter_once off;
        sub_filter_types *;
    }
--- user_files
>>> chunky.txt
hello world, world
--- request
GET /chunky.txt
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
hello there, there



=== TEST 10: error_log, no_error_log, grep_error_log (substrings and regexes)
--- config
--- request
GET /missing.html
--- error_code: 404
--- error_log
No such file or directory
open() "$TEST_NGINX_HTML_DIR/missing.html" failed
--- no_error_log eval
["[alert]", qr/\[emerg\]/]
--- grep_error_log: /missing.html" failed
--- grep_error_log_out
/missing.html" failed



=== TEST 11: error_log given as an array with a regex
--- request
GET /missing2.html
--- error_code: 404
--- error_log eval
[qr{open\(\) ".*?/missing2\.html" failed}, "[error]"]
--- wait: 0.1



=== TEST 12: environment variables in sections
--- config
    location = /env { return 200 "port=$TEST_NGINX_SERVER_PORT/${TEST_NGINX_SERVER_PORT}\n"; }
    location = /rand { return 200 "rand=$TEST_NGINX_RAND_PORT_1\n"; }
--- request eval
["GET /env", "GET /rand"]
--- response_body eval
["port=$ENV{TEST_NGINX_SERVER_PORT}/$ENV{TEST_NGINX_SERVER_PORT}\n", qr/^rand=\d+\n\z/]



=== TEST 13: pipelined requests on one connection
--- config
    location = /a { return 200 "a\n"; }
    location = /b { return 200 "b\n"; }
--- pipelined_requests eval
["GET /a", "GET /b"]
--- response_body eval
["a\n", "b\n"]



=== TEST 14: raw_request, in two packets, HTTP/1.0
--- raw_request eval
["GET /a HTTP/1.0\r\nHo", "st: localhost\r\n\r\n"]
--- response_body
a



=== TEST 15: HEAD response has no body
--- request
HEAD /a
--- response_headers
Content-Length: 2
--- response_body chomp



=== TEST 16: timeout with abort is not a failure
--- config
    location = /stall { proxy_pass http://127.0.0.1:$TEST_NGINX_BLACKHOLE_PORT; }
--- request
GET /stall
--- timeout: 300ms
--- abort
--- ignore_response



=== TEST 17: server_config, main_config, http_config, user_files with mtime
--- main_config
worker_rlimit_nofile 4096;
--- http_config
server_tokens off;
--- server_config
add_header X-Server-Level yes;
--- config
--- init
open my $fh, '<', "$ENV{TEST_NGINX_SERVROOT}/conf/nginx.conf" or die $!;
my $conf = do { local $/; <$fh> };
::like($conf, qr/^worker_rlimit_nofile 4096;$/m, 'TEST 17: main_config in nginx.conf');
--- user_files
>>> static/old.txt 199801171935.33
old file
--- request
GET /static/old.txt
--- response_headers
X-Server-Level: yes
Server: nginx
!X-Default-Http
--- response_headers_like
Last-Modified: \w+, \d\d Jan 1998 .*
--- response_body
old file



=== TEST 18: init can use the client API and set variables for the request
--- config
    location = /t { return 200 "hi\n"; }
    location = /hdr { return 200 "foo=$http_x_foo\n"; }
--- init
my $r = Test::Nginx::Chat::http_request(GET => '/t');
::is($r->{body}, "hi\n", 'TEST 18: http_request against the main instance');
$r = Test::Nginx::Chat::HTTP::http_request('GET', '/hdr', { 'X-Foo' => 'x' });
::is($r->{body}, "foo=x\n", 'TEST 18: Test::Nginx::Chat::HTTP::http_request alias');
$ENV{TEST_NGINX_FROM_INIT} = 'set-by-init';
--- request eval
["GET /t", "GET /hdr"]
--- more_headers
X-Foo: $TEST_NGINX_FROM_INIT
--- response_body eval
["hi\n", "foo=set-by-init\n"]



=== TEST 19: a skipped block is not run
--- SKIP
--- request
GET /t
--- error_code: 599



=== TEST 20: must_die with a bad configuration
--- config
    location = /t { return a b c; }
--- must_die
--- error_log
invalid number of arguments in "return" directive



=== TEST 21: nginx starts again after must_die
--- config
    location = /t { return 200 "back\n"; }
--- request
GET /t
--- response_body
back
