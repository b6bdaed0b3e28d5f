# The access log of the shipped conf/nginx.conf and the request's trace
# context: every line is JSON in valid UTF-8 whatever the client sent,
# access_token values are redacted, a client's X-Request-ID is taken only
# if sane, $chat_user_id and $chat_route name the caller and the route, and
# a W3C traceparent is accepted or made, returned, logged and carried by
# the events the request publishes.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat qw(:all);
use ChatStack;
use Cwd qw(getcwd);
use Encode ();
use Time::HiRes qw(sleep);

my $top = getcwd();
my $stack = stack_start(($ENV{TEST_NGINX_SERVROOT} // "$top/t/servroot")
                        . '_logs');
my $base = $stack->{base};
my $log = "$stack->{prefix}/logs/access.log";

$ChatStack::Base = $base;

# the log line of a response: the one with its traceparent, which every
# listener returns (written when the request ends, maybe after the
# response has arrived)
sub logged {
    my ($res) = @_;
    my $tp = ref $res eq 'HASH' ? $res->{headers}{traceparent}
                                : $res->headers->{traceparent};
    return undef unless defined $tp;
    for (1 .. 40) {
        open(my $fh, '<:raw', $log) or die "log: $!";
        my @lines = grep { /"traceparent":"\Q$tp\E"/ } <$fh>;
        close $fh;
        return $lines[0] if @lines;
        sleep 0.05;
    }
    return undef;
}

# a line as JSON: strict UTF-8 first, then the document
sub parse_line {
    my ($line) = @_;
    my $text = eval {
        Encode::decode('UTF-8', $line, Encode::FB_CROAK | Encode::LEAVE_SRC)
    };
    return undef unless defined $text;
    return eval { JSON::PP->new->decode($text) };
}

# the fields of the newest entry of a stream whose value matches $re
sub stream_entry {
    my ($stream, $re) = @_;
    for (1 .. 50) {
        my @lines = split /\n/, redis_cmd('XREVRANGE', $stream, '+', '-',
                                          'COUNT', 100);
        my (@entry, %f);
        # an id, then names and values
        for my $line (@lines, '0-0') {
            if ($line =~ /^\d+-\d+$/) {
                %f = @entry;
                return \%f if @entry && ($f{value} // '') =~ $re;
                @entry = ();
                next;
            }
            push @entry, $line;
        }
        sleep 0.1;
    }
    return {};
}

my $traceparent = qr/^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

# bytes that are not UTF-8, quotes, control characters and an access
# token in the URI and the User-Agent: the line stays valid JSON
{
    my $jwt = user_token(424242);
    my $res = raw_request($stack->{port}{http},
        "GET /api/messages/stream/\xff\"x?access_token=$jwt&a=\xfe"
        . "&Access_Token=$jwt HTTP/1.1\r\nHost: x\r\n"
        . "User-Agent: agent \xff\xc3\x28 \"q\" \x7f \xe2\x82\xac\r\n"
        . "Connection: close\r\n\r\n");

    like($res && $res->{status}, qr/^4\d\d$/, 'a 4xx (the room id)');

    my $line = logged($res) // '';
    my $e = parse_line($line);
    ok($e, 'the line is JSON in valid UTF-8') or diag($line);
    unlike($line, qr/\Q$jwt\E/, 'the token is not in the log');
    is($e->{uri}, '/api/messages/stream/%FF"x?access_token=REDACTED'
                  . '&a=%FE&Access_Token=REDACTED',
       'uri: redacted, bytes that are not UTF-8 percent-encoded');
    is($e->{user_agent}, "agent \\xFF\\xC3( \"q\" \x7f \x{20ac}",
       'user agent: \\xHH for bytes that are not UTF-8, UTF-8 kept');
    is($e->{method}, 'GET', 'method');
    is($e->{route}, '/api/messages/stream/{room_id}', 'route');

    # a control character: nginx refuses the request line, and the line
    # keeps what it has
    $res = raw_request($stack->{port}{http},
        "POST /x?access_token=$jwt&\x01\xff HTTP/1.1\r\nHost: x\r\n"
        . "Connection: close\r\n\r\n");
    is($res && $res->{status}, 400, 'a control character: 400');
    $line = logged($res) // '';
    $e = parse_line($line);
    ok($e, 'its line is JSON') or diag($line);
    unlike($line, qr/\Q$jwt\E/, 'without the token');
    is($e->{method}, 'POST', 'the method sent, not the GET of the page');
}

# the stream's token in the query of a stream that opens: never logged
{
    my $user = register_user();
    my $token = login_user($user);

    my $sse = sse_open("$base/api/notifications/stream?access_token=$token");
    is($sse->status, 200, 'the stream opens with ?access_token=');
    $sse->close;

    my $line = logged($sse);
    ok($line, 'the stream is logged when it ends');
    my $e = parse_line($line // '');
    unlike($line // '', qr/\Q$token\E/, 'its token is not');
    is($e->{uri}, '/api/notifications/stream?access_token=REDACTED',
       'the token is redacted');
    is($e->{user_id}, "$user->{id}", 'the stream user is logged');
    is($e->{route}, '/api/notifications/stream', 'and its route');
}

# X-Request-ID: a sane one is kept, others are replaced
{
    my @cases = (
        [ 'req-123_ABC.x:y+z/=', 1 ],
        [ 'a' x 128, 1 ],
        [ 'a' x 129, 0 ],
        [ 'has space', 0 ],
        [ "quote\"s", 0 ],
        [ "bytes\xff", 0 ],
        [ 'semi;colon', 0 ],
    );

    for my $c (@cases) {
        my ($id, $kept) = @$c;
        my $res = raw_request($stack->{port}{http},
            "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: $id\r\n"
            . "Connection: close\r\n\r\n");
        my $e = parse_line(logged($res) // '');
        my $name = length($id) > 20 ? length($id) . ' characters' : $id;
        $name =~ s/[^\x20-\x7e]/?/g;

        ok($e, "X-Request-ID $name: log line is JSON");

        if ($kept) {
            is($res->{headers}{'x-request-id'}, $id, "$name: returned");
            is($e->{request_id}, $id, "$name: logged");
        } else {
            like($res->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/,
                 "$name: replaced by a new id");
            is($e->{request_id}, $res->{headers}{'x-request-id'},
               "$name: the new id is logged");
        }
    }

    # two of them: neither is taken
    my $res = raw_request($stack->{port}{http},
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-ID: one\r\n"
        . "X-Request-ID: two\r\nConnection: close\r\n\r\n");
    like($res->{headers}{'x-request-id'}, qr/^[0-9a-f]{32}$/,
         'two X-Request-IDs: a new id');

    # new ids and traces never repeat, in one worker or across both
    my (%ids, %traces, %parents);
    for (1 .. 300) {
        my $r = raw_request($stack->{port}{http},
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        $ids{$r->{headers}{'x-request-id'} // ''}++;
        my (undef, $trace, $parent) =
            split /-/, $r->{headers}{traceparent} // '';
        $traces{$trace // ''}++;
        $parents{$parent // ''}++;
    }
    is(scalar(grep { /^[0-9a-f]{32}$/ } keys %ids), 300,
       '300 requests: 300 different request ids');
    is(scalar(grep { /^[0-9a-f]{32}$/ && !/^0+$/ } keys %traces), 300,
       '... 300 different trace ids');
    is(scalar(grep { /^[0-9a-f]{16}$/ && !/^0+$/ } keys %parents), 300,
       '... and 300 different parent ids');
}

# user id and route of an authenticated request; none without a token
{
    my $user = register_user();
    my $token = login_user($user);

    my (undef, undef, $res) = api(GET => "/api/users/$user->{id}", $token);
    my $e = parse_line(logged($res) // '');
    is($e->{user_id}, "$user->{id}", 'user_id: the caller');
    is($e->{route}, '/api/users/{user_id}', 'route: the pattern');
    is($e->{status}, 200, 'status 200');

    (undef, undef, $res) = api(GET => "/api/users/$user->{id}");
    $e = parse_line(logged($res) // '');
    is($e->{user_id}, '', 'no token: no user_id');
    is($e->{status}, 401, 'status 401');

    # a revoked token: a 401, no caller
    api(POST => '/api/auth/logout', $token);
    (undef, undef, $res) = api(GET => '/api/profile/me', $token);
    $e = parse_line(logged($res) // '');
    is($e->{status}, 401, 'a revoked token: 401');
    is($e->{user_id}, '', 'and no user_id');
    is($e->{route}, '/api/profile/me', 'but its route');

    (undef, undef, $res) = api(GET => '/ping');
    $e = parse_line(logged($res) // '');
    is($e->{route}, '', 'a location of no service: no route');
}

# traceparent: a valid one keeps its trace id and flags, with a span of
# ours; response, log and the event share it
{
    my $trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    my $parent = '00f067aa0ba902b7';
    my $name = unique_name('tp');

    my ($status, $body, $res) = api(POST => '/api/auth/register', undef,
        { email => "$name\@example.com", username => $name,
          password => 'Secret#123' },
        { traceparent => "00-$trace-$parent-00" });

    is($status, 201, 'registered with a traceparent');

    my $tp = $res->{headers}{traceparent} // '';
    like($tp, $traceparent, 'traceparent returned');
    my ($t, $span, $flags) = $tp =~ $traceparent;
    is($t, $trace, 'same trace id');
    isnt($span, $parent, 'a span of our own');
    is($flags, '00', 'the flags kept');

    ok(logged($res), 'the log line has it');

    # the event: XREVRANGE of user.events, the entry of this user
    my %f = %{ stream_entry('user.events', qr/"username": "\Q$name\E"/) };

    like($f{value} // '', qr/"__event_type__": "UserRegistered"/,
         'the UserRegistered entry');
    is($f{traceparent}, $tp, 'the event carries the traceparent');
    unlike($f{value} // '', qr/traceparent/,
           'the envelope itself is the original');
}

# the trace goes on through the notification consumer: a friend request
# with a traceparent, its FriendRequestSent, then NotificationCreated
{
    my $a = register_user();
    my $b = register_user();
    my $trace = 'a1b2c3d4e5f60718293a4b5c6d7e8f90';

    my ($status, $body, $res) = api(POST => '/api/friends/request',
        login_user($a), { user_id_2 => $b->{id} },
        { traceparent => "00-$trace-1112131415161718-01" });
    is($status, 201, 'a friend request with a traceparent');
    my $tp = $res->{headers}{traceparent} // '';
    like($tp, qr/^00-$trace-/, 'its trace');

    my $sent = stream_entry('friend.events',
        qr/"friendship_id": $body->{id}, .*"FriendRequestSent"/);
    is($sent->{traceparent}, $tp, 'FriendRequestSent carries it');

    my $created = stream_entry('notification.events',
        qr/"user_id": $b->{id}, "type": "friend_request".*NotificationCreated/);
    is($created->{traceparent}, $tp,
       'so does the NotificationCreated the consumer made of it');
}

# invalid traceparents start a new trace, sampled
for my $bad ('00-00000000000000000000000000000000-00f067aa0ba902b7-01',
             '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
             'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
             '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
             '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x',
             '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\xff")
{
    my $res = raw_request($stack->{port}{user},
        "GET /health HTTP/1.1\r\nHost: x\r\ntraceparent: $bad\r\n"
        . "Connection: close\r\n\r\n");
    my $tp = $res->{headers}{traceparent} // '';
    (my $name = $bad) =~ s/[^\x20-\x7e]/?/g;
    like($tp, qr/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, "$name: new trace");
    unlike($tp, qr/4bf92f3577b34da6a3ce929d0e0e4736/, "$name: not taken");
}

# a later version with more fields is understood as version 00
{
    my $res = raw_request($stack->{port}{friend},
        "GET /health HTTP/1.1\r\nHost: x\r\ntraceparent: 01-"
        . "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later\r\n"
        . "Connection: close\r\n\r\n");
    like($res->{headers}{traceparent} // '',
         qr/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/,
         'a later version: its trace continues');
}

# two requests without one: two traces
{
    my $a = http_request(GET => "$base/health")->{headers}{traceparent};
    my $b = http_request(GET => "$base/health")->{headers}{traceparent};
    like($a, $traceparent, 'a trace is made');
    isnt(substr($a, 3, 32), substr($b, 3, 32), 'one per request');
}

# every line written during this file is JSON in valid UTF-8
{
    open(my $fh, '<:raw', $log) or die "log: $!";
    my @all = <$fh>;
    close $fh;
    my @bad = grep { !parse_line($_) } @all;
    cmp_ok(scalar @all, '>', 20, scalar(@all) . ' lines');
    is(scalar @bad, 0, 'all of them parse') or diag(@bad[0 .. 2]);
}

ok(stack_stop($stack), 'nginx stopped');

done_testing();
