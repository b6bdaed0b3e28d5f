# Typing indicators (C13): 202 {"status":"ok"}, a "typing" event without
# an id line on every stream of the room, also on a second nginx sharing
# the datastores; five quick calls, spread over both nginx, give exactly one
# event in that second; the next second gives the next one; validation and
# the room checks as C4 (422, 401, 404, 403); a body is optional; JSON 503
# while MariaDB is unavailable.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use JSON::PP ();
use Time::HiRes qw(time sleep);

my $config = <<'EOF';
location /api/auth { chat_user; }
location /api/chat-rooms { chat_msg; }
location /api/messages { chat_msg; }
EOF

my @nodes = chat_nodes(2, $config);

my ($a, $b) = @nodes;

$ChatStack::Base = $a->url('');

my $alice = register_user();
my $bob = register_user();
my $eve = register_user();
my $ta = login_user($alice);
my $tb = login_user($bob);
my $te = login_user($eve);

my ($status, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $ta);
is($status, 200, 'room for alice and bob');
my $rid = $room->{id};

# a call waits out MariaDB's timeout (longer under valgrind)
my $wait = $ENV{TEST_NGINX_USE_VALGRIND} ? 60 : 10;

sub typing {
    my ($token, $body, $node, $path) = @_;
    my %h = (defined $token ? (Authorization => "Bearer $token") : ());
    $h{'Content-Type'} = 'application/json' if defined $body;
    $body = json_encode($body) if ref $body;
    my $res = http_request(POST => ($node // $a)->url($path
                                          // "/api/messages/$rid/typing"),
                           \%h, $body, $wait);
    return ($res->{status}, json_decode($res->{body}), $res->{body});
}

sub stream {
    my ($node, $token) = @_;
    my $s = sse_open("/api/messages/stream/$rid?access_token=$token", {},
                     $node->port);
    my $ev = $s->read_event(2);
    is($ev && $ev->{event}, 'connected', 'stream connected');
    return $s;
}

# every "typing" event a stream gets within $secs
sub typing_events {
    my ($s, $secs) = @_;
    my $deadline = time() + $secs;
    my @got;
    while ((my $left = $deadline - time()) > 0) {
        my $ev = $s->read_event($left) or last;
        push @got, $ev if $ev->{event} eq 'typing';
    }
    return @got;
}

# errors: as C4, in C4's order, JSON
{
    my ($st, $body) = typing(undef, {});
    is($st, 401, 'no token: 401');
    is_deeply($body, { detail => 'Not authenticated' }, '... JSON');

    ($st, $body) = typing($ta, {}, $a, '/api/messages/abc/typing');
    is($st, 422, 'room id not an integer: 422');
    is($body->{detail}[0]{type}, 'int_parsing', '... int_parsing');
    is_deeply($body->{detail}[0]{loc}, ['path', 'room_id'], '... in the path');

    ($st, $body) = typing($ta, {}, $a, '/api/messages/0/typing');
    is($st, 422, 'room id 0: 422');
    is($body->{detail}{message}, 'room_id must be a positive integer',
       '... E-B\' message');

    ($st, $body) = typing($ta, { is_typing => 'maybe' });
    is($st, 422, 'is_typing "maybe": 422');
    is($body->{detail}[0]{type}, 'bool_parsing', '... bool_parsing');
    is_deeply($body->{detail}[0]{loc}, ['body', 'is_typing'], '... in the body');

    ($st, $body) = typing($ta, { is_typing => [] });
    is($st, 422, 'is_typing a list: 422');
    is($body->{detail}[0]{type}, 'bool_type', '... bool_type');

    ($st, $body) = typing($ta, '{"is_typing": null}');
    is($st, 422, 'is_typing null: 422');

    ($st, $body) = typing($ta, '{"is_typing": tru');
    is($st, 422, 'broken JSON: 422');
    is($body->{detail}[0]{type}, 'json_invalid', '... json_invalid');

    ($st, $body) = typing($ta, '[true]');
    is($st, 422, 'not an object: 422');

    ($st, $body) = typing($ta, { is_typing => 'maybe' }, $a,
                          '/api/messages/0/typing');
    is($st, 422, 'body and path checked before the room');

    ($st, $body) = typing($ta, {}, $a, '/api/messages/2147483000/typing');
    is($st, 404, 'unknown room: 404');
    is($body->{detail}{message}, 'Chat room not found', '... C4\'s body');

    ($st, $body) = typing($te, {});
    is($st, 403, 'not a member: 403');
    is_deeply($body, { detail => { error => 'authorization_error',
                                   message => 'Access denied to this chat room',
                                   details => undef, status_code => 403 } },
              '... C4\'s body');

    ($st, $body) = typing($ta, undef, $a, "/api/messages/$rid/typing/x");
    is($st, 404, 'a longer path is not typing');
}

# bob's streams on both nginx, alice's own on node A
my @streams = (stream($a, $tb), stream($b, $tb), stream($a, $ta));

sleep 0.2;

{
    my $t0 = time();
    my @st;
    for my $i (1 .. 5) {
        my ($st, $body, $raw) = typing($ta, { is_typing => JSON::PP::true() },
                                       $i % 2 ? $a : $b);
        push @st, $st;
        is($raw, '{"status":"ok"}', "call $i: {\"status\":\"ok\"}") if $i == 1;
    }
    is_deeply(\@st, [(202) x 5], 'five quick calls over two nginx: 202 each');
    my $spent = time() - $t0;
    cmp_ok($spent, '<', 0.8, 'the five calls took less than the second');
    diag(sprintf('five typing calls over two nginx: %.0f ms',
                 1000 * $spent));

    # the frames wait in the sockets meanwhile
    sleep(1 - (time() - $t0));

    for my $i (0 .. $#streams) {
        my @got = grep { $_->{event} eq 'typing' } $streams[$i]->poll_events;
        is(scalar @got, 1, "stream $i: exactly one typing event in the second");
        my $ev = $got[0] // {};
        ok(!exists $ev->{id}, "stream $i: no id line");
        my $d = json_decode($ev->{data}) // {};
        is($d->{room_id}, $rid, "stream $i: room_id");
        is($d->{user_id}, $alice->{id}, "stream $i: user_id");
        is($d->{username}, $alice->{username}, "stream $i: username");
        ok(JSON::PP::is_bool($d->{is_typing}) && $d->{is_typing},
           "stream $i: is_typing true");
        like($d->{timestamp} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/,
             "stream $i: timestamp");
    }
}

# the limit holds for a second, not longer; is_typing false goes the same
# way; no body means is_typing true; the limit is per user
{
    sleep 0.3;

    my ($st) = typing($ta, { is_typing => JSON::PP::false() }, $b);
    is($st, 202, 'a second later: 202');

    my $ttl = redis_cmd('PTTL', "chat:room:$rid:typing:$alice->{id}");
    ok($ttl > 0 && $ttl <= 1000, "the limit lives a second ($ttl ms left)");

    my ($st2) = typing($tb, undef);
    is($st2, 202, 'bob, no body: 202');

    my @got = typing_events($streams[0], 0.8);
    is(scalar @got, 2, 'alice\'s and bob\'s events');
    my %by = map { my $d = json_decode($_->{data}); ($d->{user_id} => $d) }
             @got;
    ok(exists $by{$alice->{id}} && !$by{$alice->{id}}{is_typing},
       'alice: is_typing false');
    ok(exists $by{$bob->{id}} && $by{$bob->{id}}{is_typing},
       'bob without a body: is_typing true');
}

# stored nowhere: the room's messages are untouched
{
    my ($st, $page) = api(GET => "/api/messages/$rid", $tb);
    is($st, 200, 'messages of the room');
    is($page->{total_count}, 0, 'typing stored no message');
}

# MariaDB unavailable: the room cannot be checked, a JSON 503
{
    freeze('mariadb');
    my ($st, $body) = typing($ta, {});
    thaw('mariadb');
    is($st, 503, 'MariaDB frozen: 503');
    ok(ref $body eq 'HASH', '... JSON');

    sleep 1.1;
    ($st) = typing($ta, {});
    is($st, 202, 'thawed: 202 again');
}

$_->close for @streams;

stop_nginx(@nodes);

done_testing();
