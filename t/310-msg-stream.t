# The room stream (C10): errors as JSON before streaming; a message sent
# through REST reaches two streams of one user and the other member's
# stream within a second, also on a second nginx sharing the datastores;
# a stream dropped in the middle of a 200-message burst and resumed with
# Last-Event-ID ends with all 200 exactly once and in order.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use POSIX ();
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

sub stream {
    my ($node, $token, $extra) = @_;
    return sse_open("/api/messages/stream/$rid?access_token=$token"
                    . ($extra // ''), {}, $node->port);
}

sub send_message {
    my ($token, $content, $node) = @_;
    my $res = http_request(POST => ($node // $a)->url("/api/messages/$rid"),
                           { Authorization => "Bearer $token",
                             'Content-Type' => 'application/json' },
                           json_encode({ content => $content }), 10);
    return ($res->{status}, json_decode($res->{body}));
}

# errors before the stream starts are ordinary JSON responses
{
    my $res = http_request(GET => $a->url("/api/messages/stream/$rid"));
    is($res->{status}, 401, 'no token: 401');
    is($res->{body}, '{"detail":"Not authenticated"}', '... JSON');

    $res = http_request(GET => $a->url("/api/messages/stream/$rid"),
                        { Authorization => "Bearer $te" });
    is($res->{status}, 403, 'not a member: 403');
    like($res->{body}, qr/"Access denied to this chat room"/, '... JSON');

    $res = http_request(GET => $a->url('/api/messages/stream/2147483000'),
                        { Authorization => "Bearer $ta" });
    is($res->{status}, 404, 'unknown room: 404');

    $res = http_request(GET => $a->url('/api/messages/stream/abc'),
                        { Authorization => "Bearer $ta" });
    is($res->{status}, 422, 'not an id: 422');

    $res = http_request(GET => $a->url('/api/messages/stream/0'),
                        { Authorization => "Bearer $ta" });
    is($res->{status}, 422, 'zero: 422');
}

# two streams of alice (one per node), bob's on node B
my @streams = (stream($a, $ta), stream($b, $ta), stream($b, $tb));

for my $s (@streams) {
    is($s->status, 200, 'stream open');
    my $ev = $s->read_event(2);
    is($ev && $ev->{event}, 'connected', 'connected first');
}

sleep 0.2;

{
    my $t0 = time();
    my ($st, $msg) = send_message($ta, "hello bob \x{2713}");
    is($st, 201, 'sent through REST on node A');

    for my $i (0 .. $#streams) {
        my $ev = $streams[$i]->read_event(1);
        ok($ev && $ev->{event} eq 'new_message', "stream $i: new_message");
        is($ev->{id}, $msg->{id}, "stream $i: id line is the message id");
        my $d = json_decode($ev->{data}) // {};
        is($d->{username}, $alice->{username}, "stream $i: real username");
        is($d->{content}, "hello bob \x{2713}", "stream $i: content");
        is($d->{room_id}, $rid, "stream $i: room");
    }

    cmp_ok(time() - $t0, '<', 1, 'all three within a second');
}

$_->close for @streams;

# the resume: a burst of 200 from another process, the stream dropped in
# the middle, resumed with Last-Event-ID
{
    my $s = stream($a, $tb);
    $s->read_event(2);
    sleep 0.2;

    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        for my $n (1 .. 200) {
            send_message($ta, "burst $n", $n % 2 ? $a : $b);
        }
        POSIX::_exit(0);
    }

    my (@seen, $last);

    while (@seen < 80) {
        my $ev = $s->read_event(5) or last;
        next unless $ev->{event} eq 'new_message';
        push @seen, json_decode($ev->{data})->{content};
        $last = $ev->{id};
    }

    $s->close;
    is(scalar @seen, 80, 'read 80 messages, then dropped the stream');

    # a little more of the burst goes by unseen
    sleep 0.3;

    my $r = sse_open("/api/messages/stream/$rid?access_token=$tb",
                     { 'Last-Event-ID' => $last }, $a->port);
    my $ev = $r->read_event(2);
    is($ev && $ev->{event}, 'connected', 'resumed: connected');

    while (@seen < 200) {
        $ev = $r->read_event(5) or last;
        next unless $ev->{event} eq 'new_message';
        push @seen, json_decode($ev->{data})->{content};
    }

    waitpid($pid, 0);
    $r->close;

    is(scalar @seen, 200, 'all 200 after the resume');
    is_deeply(\@seen, [map { "burst $_" } 1 .. 200],
              'exactly once and in order');
}

# the query-argument form of the resume, for a first EventSource request
{
    my ($st, $m1) = send_message($ta, 'one');
    my ($st2, $m2) = send_message($ta, 'two');
    my $s = sse_open("/api/messages/stream/$rid?access_token=$tb"
                     . "&last_event_id=$m1->{id}", {}, $b->port);
    $s->read_event(2);
    my $ev = $s->read_event(2);
    is($ev && $ev->{id}, $m2->{id}, 'last_event_id argument replays');
    $s->close;
}

stop_nginx(@nodes);

done_testing();
