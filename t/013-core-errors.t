# Bad input on every route of the shipped conf/nginx.conf: every answer is
# JSON in valid UTF-8, in one of the contract's error shapes, a 4xx (never
# a 5xx), whether a module or nginx itself makes it; and the access log of
# it all parses, with no token in it.
#
# The routes are read from the route tables of the modules' sources, so a
# new route is fuzzed as soon as it exists.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;
use Cwd qw(getcwd);
use Encode ();

my $top = getcwd();
my $stack = stack_start(($ENV{TEST_NGINX_SERVROOT} // "$top/t/servroot")
                        . '_errors');
my $base = $stack->{base};

$ChatStack::Base = $base;

# ---- the routes: { NGX_HTTP_<METHOD>, ngx_string("/api/...") } rows

my @routes;

for my $file (glob "$top/ngx_chat_*_module/ngx_http_chat_*_module.c") {
    open(my $fh, '<', $file) or die "$file: $!";
    my $src = do { local $/; <$fh> };
    close $fh;

    while ($src =~ /\{\s*NGX_HTTP_([A-Z]+)\s*,\s*ngx_string\("(\/api\/[^"]*)"\)
                    \s*,\s*([^,]*),/gx)
    {
        push @routes, { method => $1, pattern => $2, flags => $3 };
    }
}

cmp_ok(scalar @routes, '>=', 35, scalar(@routes) . ' routes in the tables');

# ---- what every answer must be

my (%statuses, @failures);

sub utf8_json {
    my ($bytes) = @_;
    my $text = eval {
        Encode::decode('UTF-8', $bytes, Encode::FB_CROAK | Encode::LEAVE_SRC)
    };
    return undef unless defined $text;
    return eval { JSON::PP->new->allow_nonref->decode($text) };
}

# the contract's shapes (API.md 2.7): {"detail":...} (E-A, E-B, E-B', E-C)
# or {"error","message",...} (E-D, the gateway's 429)
sub shape_ok {
    my ($status, $json) = @_;
    return 0 unless ref $json eq 'HASH';

    if (exists $json->{detail}) {
        my $d = $json->{detail};
        return 1 if !ref $d && length $d;
        if (ref $d eq 'ARRAY') {
            return @$d && !grep { ref $_ ne 'HASH' || !$_->{loc}
                                  || !defined $_->{msg} } @$d;
        }
        return ref $d eq 'HASH' && defined $d->{error}
               && (defined $d->{message} || $status == 503);
    }

    return defined $json->{error} && defined $json->{message};
}

# $want: a regexp of statuses
sub check {
    my ($name, $res, $want) = @_;
    my $status = $res ? $res->{status} // 0 : 0;
    my $body = $res ? $res->{body} // '' : '';
    my $json = utf8_json($body);
    my @why;

    $statuses{$status}++;

    push @why, "status $status" unless $status =~ $want;
    push @why, 'a 5xx' if $status >= 500 && "$want" !~ /5/;
    push @why, 'not JSON in valid UTF-8' unless defined $json;
    push @why, 'not application/json'
        unless ($res->{headers}{'content-type'} // '')
               =~ m{^application/json};
    push @why, 'not the contract shape'
        if $status >= 400 && defined $json && !shape_ok($status, $json);

    return 1 unless @why;

    (my $printable = $name) =~ s/[^\x20-\x7e]/?/g;
    push @failures, "$printable: @why: " . substr($body, 0, 200);
    return 0;
}

# ---- callers

my $user = register_user();
my $n = 0;
my @tokens;

# a token of its own for every request: a logout among them revokes only
# the one it was given
sub token {
    my $t = user_token($user->{id}, $user->{email}, n => ++$n);
    push @tokens, $t;
    return $t;
}

sub request {
    my ($method, $path, $headers, $body) = @_;
    my %h = (
        'User-Agent' => "fuzz \xff\xfe\xc3\x28",
        'X-Request-ID' => "id \"\xff",
        traceparent => "00-\xff",
        %{ $headers // {} },
    );
    return http_request($method, "$base$path", \%h, $body, 10);
}

my %value = (
    room_id => 1, participant_id => 1, user_id => 1,
    requester_user_id => 1, target_user_id => 1,
    message_id => '65dab0c3f1e2a4b5c6d7e8f9', emoji => 'x',
);

sub path_with {
    my ($pattern, $bad) = @_;
    (my $p = $pattern) =~ s/\{(\w+)\}/$bad \/\/ $value{$1} \/\/ 1/ge;
    return $p;
}

my $bad_query = '?query=%FF%FE&user_ids=%FF,1&limit=%FF&skip=-1&page=%C0'
                . '&last_event_id=%FF&access_token=';

my $bad_body = "{\"content\":\"\xff\",\"message_type\":\"\xfe\xff\","
    . "\"email\":\"\xff\@example.com\",\"username\":\"\xff\xff\xff\","
    . "\"password\":\"\xffxx\",\"display_name\":\"\xc3\x28\","
    . "\"status_message\":\"\xed\xa0\x80\",\"emoji\":\"\xff\","
    . "\"message_ids\":[\"\xff\"],\"user_ids\":[\"\xff\"],"
    . "\"addressee_id\":\"\xff\",\"action\":\"\xff\","
    . "\"notification_ids\":[\"\xff\"]}";

# ---- every route, with and without a token

for my $r (@routes) {
    my $m = $r->{method};
    my $json = $r->{flags} =~ /NGX_HTTP_CHAT_JSON/;
    my $stream = $r->{pattern} =~ /stream/;
    my $has_param = $r->{pattern} =~ /\{/;

    for my $auth (0, 1) {
        my %h;
        my $tag = "$m $r->{pattern}" . ($auth ? ' (token)' : '');

        # path parameters that are not UTF-8, raw and percent-encoded
        if ($has_param) {
            for my $bad ("\xff\xfe", '%FF%C0', '%00', 'x"y\\') {
                %h = $auth ? (Authorization => 'Bearer ' . token()) : ();
                my $path = path_with($r->{pattern}, $bad);
                check("$tag path $bad",
                      request($m, $path, \%h, $m =~ /POST|PUT/ ? '{}' : undef),
                      qr/^4\d\d$/);
            }
        }

        # query arguments that are not UTF-8 (a stream with a token would
        # open: those go without)
        my $path = path_with($r->{pattern});
        %h = ($auth && !$stream) ? (Authorization => 'Bearer ' . token())
                                 : ();
        check("$tag query", request($m, $path . $bad_query
                                    . ($stream ? 'x.y.z' : token()), \%h,
                                    $m =~ /POST|PUT/ ? '{}' : undef),
              $auth && !$stream ? qr/^[24]\d\d$/ : qr/^4\d\d$/);

        next unless $m =~ /POST|PUT/;

        %h = ('Content-Type' => 'application/json',
              $auth ? (Authorization => 'Bearer ' . token()) : ());

        # strings that are not UTF-8 in every field a route reads (N3
        # ignores ids it cannot use)
        check("$tag body not UTF-8", request($m, $path, \%h, $bad_body),
              $json && $r->{pattern} ne '/api/notifications/read'
              ? qr/^4\d\d$/ : qr/^[24]\d\d$/);

        # a document followed by more: malformed, before the token matters
        for my $trail ('{"content":"hi"}xyz', '{"content":"hi"} {}',
                       "{\"content\":\"hi\"}\0", '{"content":"hi"}}')
        {
            my $res = request($m, $path, \%h, $trail);
            check("$tag trailing", $res, $json ? qr/^422$/ : qr/^[24]\d\d$/);

            next unless $json;
            my $d = utf8_json($res->{body});
            is(ref $d eq 'HASH' && ref $d->{detail} eq 'ARRAY'
               && $d->{detail}[0]{type}, 'json_invalid',
               "$tag: trailing bytes are json_invalid")
                if $trail eq '{"content":"hi"}xyz';
        }

        # not JSON at all, said to be text
        %h = ('Content-Type' => 'text/plain',
              $auth ? (Authorization => 'Bearer ' . token()) : ());
        check("$tag text/plain", request($m, $path, \%h, "\xff\x01 not json"),
              $json ? qr/^4\d\d$/ : qr/^[24]\d\d$/);
    }

    # methods the route does not have, or nobody has
    for my $odd ('PATCH', 'FOO', 'TRACE') {
        my $path = path_with($r->{pattern});
        check("$odd $r->{pattern}",
              request($odd, $path, { Authorization => 'Bearer ' . token() }),
              qr/^4\d\d$/);
    }
}

# ---- what nginx refuses itself, on every listener

my $huge = 'a' x 9000;

my @raw = (
    [ 'TRACE', "TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", qr/^405$/,
      'Method Not Allowed' ],
    [ 'CONNECT', "CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", qr/^4\d\d$/ ],
    [ 'a long URI', "GET /api/users/$huge HTTP/1.1\r\nHost: x\r\n\r\n",
      qr/^414$/, 'Request-URI Too Large' ],
    [ 'a huge header', "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: $huge"
      . "\r\n\r\n", qr/^400$/, 'Request Header Or Cookie Too Large' ],
    [ 'a huge cookie', "GET /api/users HTTP/1.1\r\nHost: x\r\nCookie: a="
      . "$huge\r\n\r\n", qr/^400$/, 'Request Header Or Cookie Too Large' ],
    [ 'a NUL in the path', "GET /api/\0x HTTP/1.1\r\nHost: x\r\n\r\n",
      qr/^400$/, 'Bad Request' ],
    [ 'a bad method', "G\@T / HTTP/1.1\r\nHost: x\r\n\r\n", qr/^400$/ ],
    [ 'a bad version', "GET / HTTP/9.x\r\nHost: x\r\n\r\n",
      qr/^(?:4\d\d|505)$/ ],
    [ 'HTTP/3.0', "GET /health HTTP/3.0\r\nHost: x\r\n\r\n", qr/^505$/,
      'HTTP Version Not Supported' ],
    [ 'no Host', "GET /health HTTP/1.1\r\n\r\n", qr/^400$/ ],
    # ignore_invalid_headers: nginx skips such a line
    [ 'a header without a colon', "GET /health HTTP/1.1\r\nHost: x\r\n"
      . "garbage\xff\r\n\r\n", qr/^(?:200|400)$/ ],
    [ 'two Content-Lengths', "POST /api/auth/login/json HTTP/1.1\r\n"
      . "Host: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
      qr/^400$/ ],
    [ 'a body too large', "POST /api/auth/register HTTP/1.1\r\nHost: x\r\n"
      . "Content-Type: application/json\r\nContent-Length: 73400320\r\n\r\n",
      qr/^413$/ ],
    [ 'a bad chunk', "POST /api/auth/login/json HTTP/1.1\r\nHost: x\r\n"
      . "Transfer-Encoding: chunked\r\n\r\nzz\r\n", qr/^400$/ ],
    [ 'POST to the uploads', "POST /uploads/none.png HTTP/1.1\r\nHost: x\r\n"
      . "Content-Length: 0\r\n\r\n", qr/^40[45]$/ ],
    [ 'DELETE to the uploads', "DELETE /uploads/x HTTP/1.1\r\nHost: x\r\n"
      . "\r\n", qr/^40[45]$/ ],
    [ 'the uploads directory', "GET /uploads/ HTTP/1.1\r\nHost: x\r\n\r\n",
      qr/^40[34]$/ ],
    [ 'an unknown path', "GET /nowhere\xff HTTP/1.1\r\nHost: x\r\n\r\n",
      qr/^404$/ ],
    [ 'an error page itself', "GET /.chat-errors/400 HTTP/1.1\r\n"
      . "Host: x\r\n\r\n", qr/^404$/ ],
);

for my $listener (qw(http user friend msg notify)) {
    for my $c (@raw) {
        my ($name, $bytes, $want, $detail) = @$c;
        my $res = raw_request($stack->{port}{$listener}, $bytes);
        check("$listener: $name", $res, $want);

        next unless defined $detail;
        my $json = utf8_json($res->{body} // '');
        is(ref $json eq 'HASH' && $json->{detail}, $detail,
           "$listener: $name: detail");
    }
}

# the gateway's 404 for an unknown /api path names it, as JSON
{
    my $res = raw_request($stack->{port}{http},
                          "GET /api/x\"\\\xff\xc3\xa9 HTTP/1.1\r\nHost: x\r\n"
                          . "\r\n");
    check('gateway 404', $res, qr/^404$/);
    my $json = utf8_json($res->{body} // '');
    is(ref $json eq 'HASH' && $json->{detail},
       "No service found for path: /api/x\"\\\x{fffd}\x{e9}",
       'the path in the detail: escaped, not UTF-8 replaced');
}

is(scalar @failures, 0, 'every answer is a JSON 4xx in the contract shape')
    or diag(join "\n", @failures[0 .. ($#failures < 20 ? $#failures : 19)]);
diag('statuses: ' . join ', ', map { "$_ x$statuses{$_}" }
                                sort keys %statuses);

# ---- the access log of all that

{
    ok(stack_stop($stack), 'nginx stopped');

    open(my $fh, '<:raw', "$stack->{prefix}/logs/access.log") or die $!;
    my @lines = <$fh>;
    close $fh;

    my @bad = grep { !utf8_json($_) } @lines;
    my %seen = map { $_ => 1 } @tokens;
    my @leaks = grep { my $l = $_; grep { index($l, $_) >= 0 } @tokens }
                @lines;

    cmp_ok(scalar @lines, '>', 500, scalar(@lines) . ' log lines');
    is(scalar @bad, 0, 'every line is JSON in valid UTF-8')
        or diag(@bad[0 .. ($#bad < 3 ? $#bad : 3)]);
    is(scalar @leaks, 0, 'no token in the log')
        or diag($leaks[0]);
    ok((grep { /access_token=REDACTED/ } @lines), 'tokens were redacted');
}

done_testing();
