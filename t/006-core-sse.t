# The SSE hub: a frame published once reaches every open stream of its
# channel, in every worker and on a second nginx sharing the same Redis;
# keep-alive comments; a client that stops reading is cut off alone.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

my $config = "location /diag/ { chat_diagnostics; }\n"
             . "location = /metrics { chat_metrics; }";
my ($a, $b) = chat_nodes(2, $config, http => "chat_sse_keepalive 1s;\n"
                                             . "chat_sse_max_queue 64k;\n");

my $chan = unique_name('c');

sub publish {
    my ($node, $event, $id, $data) = @_;
    my $res = http_request(POST => $node->url("/diag/publish/$chan"),
                           { 'Content-Type' => 'application/json' },
                           json_encode({ event => $event,
                                         (defined $id ? (id => $id) : ()),
                                         data => $data }));
    return $res->{status};
}

# several streams, on both nodes; each connection may land on any worker
my @streams = map {
    my $node = $_ % 2 ? $b : $a;
    sse_open("/diag/stream/$chan", {}, $node->port);
} 1 .. 6;

for my $s (@streams) {
    is($s->status, 200, 'stream open');
    like($s->headers->{'content-type'}, qr{^text/event-stream},
         'content type');
    is($s->headers->{'cache-control'}, 'no-cache', 'no cache');
    is($s->headers->{'x-accel-buffering'}, 'no', 'unbuffered');
    my $ev = $s->read_event(2);
    is($ev->{event}, 'connected', 'connected first');
    is_deeply(json_decode($ev->{data}), { channel => "chat:diag:$chan" },
              'connected data');
}

# open streams per route, per nginx: three on each
for my $node ($a, $b) {
    is(metric_sum(read_metrics($node->url('/metrics')),
                  'chat_sse_route_streams'), 3,
       'chat_sse_route_streams counts the streams of the node');
}

# the subscriptions settle before the first publish
sleep 0.2;

my $t0 = time();
is(publish($a, 'new_message', 'abc123', { n => 1, text => "Zo\x{eb}" }), 200,
   'published on node A');
is(publish($b, 'note', undef, { n => 2 }), 200, 'published on node B');

for my $i (0 .. $#streams) {
    my $e1 = $streams[$i]->read_event(1);
    my $e2 = $streams[$i]->read_event(1);
    is($e1->{event}, 'new_message', "stream $i: first event");
    is($e1->{id}, 'abc123', "stream $i: id line");
    is($e1->{data}, '{"n": 1, "text": "Zo\u00eb"}',
       "stream $i: data as json.dumps writes it");
    is($e2->{event}, 'note', "stream $i: second event, in order");
    ok(!defined $e2->{id}, "stream $i: no id line");
}

cmp_ok(time() - $t0, '<', 1, 'every stream got both within a second');

# keep-alive comments
{
    my $ev = $streams[0]->read_event(2.5, { comments => 1 });
    ok($ev && defined $ev->{comment}, 'keep-alive comment');
    like($ev->{comment} // '',
         qr/^ ?ping - \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$/,
         'the original ping format');
}

# an HTTP/1.0 client: no chunked coding, the frames as they are
{
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                     PeerPort => $a->port, Timeout => 2)
        or die "connect: $!";
    syswrite($sock, "GET /diag/stream/$chan HTTP/1.0\r\n\r\n");
    sleep 0.3;

    is(publish($a, 'plain', 'p1', { n => 1 }), 200, 'published for HTTP/1.0');

    my ($raw, $buf) = ('', '');
    my $until = time() + 5;

    while (time() < $until && $raw !~ /event: plain\r\ndata: [^\r]*\r\n\r\n/) {
        my $n = sysread($sock, $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }

    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    like($head // '', qr{^HTTP/1\.1 200 }, 'HTTP/1.0 stream open');
    unlike($head // '', qr{transfer-encoding}i, '... not chunked');
    like($body // '', qr/^event: connected\r\ndata: [^\r]*\r\n\r\n/,
         '... "connected" as it is');
    like($body // '',
         qr/\r\n\r\nid: p1\r\nevent: plain\r\ndata: \{"n": 1\}\r\n\r\n/,
         '... and the frame, without chunk sizes');
    close $sock;
}

# a stream opened by hand with a tiny receive window, not read yet
sub slow_stream {
    my ($port, $chan) = @_;
    socket(my $sock, Socket::PF_INET(), Socket::SOCK_STREAM(), 0)
        or die "socket: $!";
    setsockopt($sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 2048);
    connect($sock, Socket::pack_sockaddr_in($port,
                                            Socket::inet_aton('127.0.0.1')))
        or die "connect: $!";
    syswrite($sock, "GET /diag/stream/$chan HTTP/1.1\r\nHost: x\r\n\r\n");
    sleep 0.3;
    return $sock;
}

# a client that reads late: its frames wait in nginx, shared with the
# streams that already sent them, and still come whole and in order
{
    my $sock = slow_stream($a->port, $chan);

    # 40 frames of about 1.2 kB: more than the sockets hold, less than
    # chat_sse_max_queue (64k)
    my $pad = join '', map { chr(ord('a') + $_ % 26) } 1 .. 1200;
    my @got = (0, 0, 0, 0);

    for my $n (1 .. 40) {
        publish($a, 'late', "l$n", { n => $n, pad => $pad }) == 200
            or last;

        # four streams, two on each node
        for my $i (0 .. 3) {
            while (my $ev = $streams[$i]->read_event(2)) {
                next unless $ev->{event} eq 'late';
                my $d = json_decode($ev->{data});
                $got[$i]++ if $d->{n} == $got[$i] + 1 && $d->{pad} eq $pad;
                last;
            }
        }
    }

    is_deeply(\@got, [40, 40, 40, 40], 'the readers got all 40 in order');

    # now it reads: everything, whole, in order
    my ($raw, $buf, $head, @late) = ('', '');
    my $until = time() + 10;

    while (time() < $until && @late < 40) {
        my $n = sysread($sock, $buf, 65536);
        last unless $n;
        $raw .= $buf;

        # the complete chunks so far
        (my $h, my $chunks) = split /\r\n\r\n/, $raw, 2;
        $head = $h;
        my $body = '';
        while (($chunks // '') =~ /^([0-9a-f]+)\r\n/i) {
            my ($at, $len) = (length($1) + 2, hex $1);
            last if $len == 0 || length($chunks) < $at + $len + 2;
            $body .= substr($chunks, $at, $len);
            substr($chunks, 0, $at + $len + 2, '');
        }
        @late = map { json_decode($_) }
                $body =~ /^event: late\r\ndata: (.*?)\r\n/mg;
    }

    like($head // '', qr{^HTTP/1\.1 200 .*\r\ntransfer-encoding: chunked}si,
         'the late reader: a chunked stream');
    is(scalar(@late), 40, 'the late reader got all 40 frames');
    is_deeply([ map { $_->{n} } @late ], [ 1 .. 40 ], '... in order');
    is(scalar(grep { $_->{pad} eq $pad } @late), 40, '... each whole');
    unlike($a->read_error_log(0), qr/client too slow/,
           '... and it was not cut off');
    close $sock;
}

# a client that never reads, with a tiny receive window
{
    my $sock = slow_stream($a->port, $chan);

    # the readers keep up with a burst of large frames, in order
    my $big = 'x' x 16000;
    my @got = (0, 0);

    for my $n (1 .. 300) {
        publish($a, 'bulk', "b$n", { n => $n, pad => $big }) == 200
            or last;

        for my $i (0, 1) {
            while (my $ev = $streams[$i]->read_event(2)) {
                next unless $ev->{event} eq 'bulk';
                $got[$i]++ if json_decode($ev->{data})->{n} == $got[$i] + 1;
                last;
            }
        }
    }

    is($got[0], 300, 'reader 0 got all 300 in order');
    is($got[1], 300, 'reader 1 got all 300 in order');

    # the one that did not read was cut off: its stream ends early
    my ($bytes, $buf, $eof) = (0, '', 0);
    my $until = time() + 10;

    while (time() < $until) {
        my $n = sysread($sock, $buf, 65536);
        if (!$n) { $eof = 1; last }
        $bytes += $n;
    }

    ok($eof, "the slow client was disconnected after $bytes bytes");
    cmp_ok($bytes, '<', 300 * 16000, '... before getting everything');

    like($a->read_error_log(0), qr/client too slow/, 'and it was logged');
    cmp_ok(metric_sum(read_metrics($a->url('/metrics')),
                      'chat_sse_dropped_total') // 0, '>=', 1,
           '... and counted in chat_sse_dropped_total');
    close $sock;
}

$_->close for @streams;

stop_nginx($a, $b);

done_testing();
