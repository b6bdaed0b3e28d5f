# Live frames follow the room's order (seq), whatever order the sends
# finish in: with several senders at once, on two nginx instances, every
# stream gets the new_message frames in exactly the order of the room's
# stored messages, so a Last-Event-ID is a watermark.  A send that gives
# up after taking its number (a blank message, refused by the room
# checks) holds no frame behind it.

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

$ChatStack::Base = $nodes[0]->url('');

my $alice = register_user();
my $bob = register_user();
my $ta = login_user($alice);
my $tb = login_user($bob);

my ($status, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $ta);
is($status, 200, 'a room for alice and bob');
my $rid = $room->{id};

sub send_message {
    my ($node, $token, $content) = @_;
    my $res = http_request(POST => $node->url("/api/messages/$rid"),
                           { Authorization => "Bearer $token",
                             'Content-Type' => 'application/json' },
                           json_encode({ content => $content }), 10);
    return $res->{status} // 0;
}

my @streams = map {
    sse_open("/api/messages/stream/$rid?access_token=$tb", {}, $_->port)
} @nodes;
$_->read_event(2) for @streams;     # connected
sleep 0.2;

# four senders at once, two on each node, 25 messages each (one page)

my $per = 25;
my @pids;

for my $k (0 .. 3) {
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        my $node = $nodes[$k % 2];
        my $token = $k < 2 ? $ta : $tb;
        for my $n (1 .. $per) {
            send_message($node, $token, "s$k-$n") == 201 or POSIX::_exit(1);
        }
        POSIX::_exit(0);
    }

    push @pids, $pid;
}

my $failed = 0;
for (@pids) { waitpid($_, 0); $failed++ if $? }
is($failed, 0, 'every send answered 201');

# the room's order, as stored

my @stored;
my ($st, $page) = api(GET => "/api/messages/$rid?limit=100", $ta);
is($st, 200, 'the room pages');
@stored = map { $_->{content} } @{ $page->{messages} };
is(scalar @stored, 4 * $per, 'all of them stored');

for my $i (0, 1) {
    my @seen;
    while (@seen < 4 * $per) {
        my $ev = $streams[$i]->read_event(5) or last;
        next unless ($ev->{event} // '') eq 'new_message';
        push @seen, json_decode($ev->{data})->{content};
    }
    is_deeply(\@seen, \@stored,
              "stream on node $i: the frames in the room's order");
}

# a number taken and given up holds nothing back

{
    my $t0 = time;
    is(send_message($nodes[0], $ta, '   '), 400, 'a blank message is refused');
    is(send_message($nodes[1], $ta, 'after the blank'), 201,
       '... the next one is stored');

    my $ev;
    while ($ev = $streams[0]->read_event(3)) {
        last if ($ev->{event} // '') eq 'new_message';
    }
    is($ev && json_decode($ev->{data})->{content}, 'after the blank',
       '... and its frame comes at once');
    cmp_ok(time - $t0, '<', 2, '... within two seconds');
}

$_->close for @streams;

is(redis_cmd('ZCARD', "chat:room:$rid:flight") + 0, 0,
   'no number left in flight');
is(redis_cmd('ZCARD', "chat:room:$rid:ready") + 0, 0,
   'no frame left waiting');

for my $node (@nodes) {
    unlike($node->read_error_log(0), qr/\[(alert|crit|emerg)\]/,
           'no alert');
}

stop_nginx(@nodes);

done_testing();
