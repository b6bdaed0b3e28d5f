# Reload under load: three "nginx -s reload" (SIGHUP to the master) while
# four clients send messages to a room and twenty streams of that room are
# open.  A reload must be invisible to clients:
#
#   - every send gets a response; none is cut (the connection closed after
#     the request was written and before a status line); a connection
#     refused or closed before the request was written may be retried and
#     is reported on its own;
#   - every send answered 201 is stored exactly once, and nothing is
#     stored without its 201: an old worker finishes the requests whose
#     datastore operations are in flight before it exits;
#   - an old worker ends its streams cleanly: the chunked body's last
#     chunk ("0\r\n\r\n") and an access-log line; the client reconnects at
#     once with Last-Event-ID (the last id: it saw) and the replay gives it
#     the rest, so every stream sees every 201 message exactly once and in
#     the room's order;
#   - the old workers exit, and nothing is logged as [alert].

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use Test::Nginx::Chat::Exchange qw(http_call wait_any);
use ChatStack;
use List::Util qw(sum0);
use Time::HiRes qw(time sleep);

my $STREAMS = 20;
my $SENDERS = 4;
my $SEND_FOR = 10;             # s
my $SEND_PAUSE = 0.02;         # s between one sender's messages: short,
                               # so every reload meets sends in flight
my @RELOAD_AT = (2, 4.5, 7);   # s after the senders started
my $CATCH_UP = 10;             # s for the streams after the last send

plan skip_all => 'a reload needs a master process, valgrind runs nginx without one'
    if Test::Nginx::Chat::Process::valgrind_enabled();

my $config = <<'EOF';
location /api/auth { chat_user; }
location /api/chat-rooms { chat_msg; }
location /api/messages { chat_msg; }
EOF

my $ngx = start_nginx_with(port => file_port(1), workers => 2, master => 1,
                           log_level => 'info',
                           main_config => chat_main_config(),
                           http_config => chat_http_config(),
                           config => $config);

$ChatStack::Base = $ngx->url('');

my $alice = register_user();
my $bob = register_user();
my @tokens = (login_user($alice), login_user($bob));

my ($status, $room) = api(GET => "/api/chat-rooms/check/$bob->{id}", $tokens[0]);
is($status, 200, 'a room of its own');
my $rid = $room->{id};
my $tag = unique_name('reload');

# the history the clients have when they open their streams: they resume
# after it, so a stream that ends before its first message loses nothing
my ($st, $seed) = api(POST => "/api/messages/$rid", $tokens[0],
                      { content => "$tag seed" });
is($st, 201, 'the seed message');

my $log_from = $ngx->error_log_size;
my $access_from = length $ngx->read_access_log;


# --- the streams, driven from this process's select loop

my %content_of;    # message id => content, as the streams saw it

my @streams = map {
    { n => $_, token => $tokens[$_ % 2], last => $seed->{id},
      seen => [], seen_count => {}, ended => [], opened => 0,
      retried => 0, failed => [] }
} 1 .. $STREAMS;

sub open_stream {
    my ($s) = @_;
    $s->{x} = Test::Nginx::Chat::Exchange->new(
        url => $ngx->url("/api/messages/stream/$rid"), stream => 1,
        timeout => 5,
        headers => { Authorization => "Bearer $s->{token}",
                     Accept => 'text/event-stream',
                     'Last-Event-ID' => $s->{last} });
}

sub service_stream {
    my ($s) = @_;

    if (my $x = $s->{x}) {
        return unless $x->done;
        delete $s->{x};
        my $r = $x->result;

        if ($r->{outcome} eq 'response' && $r->{status} == 200) {
            $s->{sse} = $x->sse;
            $s->{opened}++;
        } else {
            if ($r->{retryable}) {
                $s->{retried}++;
            } else {
                push @{ $s->{failed} }, "$r->{outcome} "
                    . ($r->{status} // '') . ' ' . ($r->{error} // $r->{body});
            }
            $s->{reopen_at} = time() + 0.05;
        }
    }

    if (my $sse = $s->{sse}) {
        for my $ev ($sse->poll_events) {
            next unless ($ev->{event} // '') eq 'new_message';
            my $data = json_decode($ev->{data}) // {};
            $content_of{ $ev->{id} } //= $data->{content};
            push @{ $s->{seen} }, $ev->{id};
            $s->{seen_count}{ $ev->{id} }++;
            $s->{last} = $ev->{id};
        }

        if ($sse->eof) {
            push @{ $s->{ended} }, { chunk => $sse->last_chunk,
                                     error => $sse->{error},
                                     after => scalar @{ $s->{seen} } };
            $sse->close;
            delete $s->{sse};
            $s->{reopen_at} = time();    # at once, with Last-Event-ID
        }
    }

    if (!$s->{x} && !$s->{sse} && defined $s->{reopen_at}
        && time() >= $s->{reopen_at})
    {
        delete $s->{reopen_at};
        open_stream($s);
    }
}

my @timers;    # [ time, code ]

# the first few of a list, for diagnostics
sub few { return @_[0 .. ($#_ < 9 ? $#_ : 9)] }

# runs the loop for up to $seconds, or until $done->() is true
sub pump {
    my ($seconds, $done) = @_;
    my $end = time() + $seconds;

    while (time() < $end) {
        while (@timers && $timers[0][0] <= time()) {
            (shift @timers)->[1]->();
        }
        wait_any(0.05, map { $_->{x} // $_->{sse} // () } @streams);
        service_stream($_) for @streams;
        return 1 if $done && $done->();
    }
    return 0;
}

open_stream($_) for @streams;
ok(pump(5, sub { !grep { !$_->{sse} } @streams }), "$STREAMS streams open");


# --- the senders, each in a process of its own, one message at a time

my $t0 = time();
my $send_end = $t0 + $SEND_FOR;

my @senders = map {
    my $k = $_;
    my $token = $tokens[$k % 2];

    fork_job(sub {
        my @out;
        my $i = 0;

        while (time() < $send_end) {
            my $content = "$tag $k-" . ++$i;
            my ($r, $retries) = (undef, 0);

            # the server cannot have seen a request it refused before it
            # was written: sending it again is safe
            while (1) {
                $r = http_call(method => 'POST',
                               url => $ngx->url("/api/messages/$rid"),
                               headers => { Authorization => "Bearer $token",
                                            'Content-Type' => 'application/json' },
                               body => json_encode({ content => $content }),
                               timeout => 10);
                last unless $r->{retryable} && $retries < 100;
                $retries++;
                sleep 0.02;
            }

            my $body = json_decode($r->{body});
            push @out, { content => $content, sender => $k, i => $i,
                         outcome => $r->{outcome}, status => $r->{status},
                         id => ref $body eq 'HASH' ? $body->{id} : undef,
                         retries => $retries, error => $r->{error},
                         body => substr($r->{body}, 0, 200) };
            sleep $SEND_PAUSE;
        }

        return \@out;
    })
} 1 .. $SENDERS;


# --- the reloads

my (@old_workers, @reloaded);

@timers = map {
    my $at = $t0 + $_;
    [ $at, sub {
          push @old_workers, $ngx->worker_pids;
          push @reloaded, $ngx->reload;
      } ]
} @RELOAD_AT;

pump($SEND_FOR + 15, sub { !grep { !job_done($_) } @senders });
is(scalar(grep { $_ } @reloaded), scalar @RELOAD_AT,
   scalar(@RELOAD_AT) . ' reloads signalled');

my @sends = map { @{ job_result($_) // [] } } @senders;
my @created = grep { $_->{outcome} eq 'response' && $_->{status} == 201 }
              @sends;
my %created = map { $_->{id} => $_ } @created;

diag(scalar(@sends) . " sends, " . scalar(@created) . " answered 201");
cmp_ok(scalar @created, '>=', $SENDERS * $SEND_FOR,
       'the senders kept sending (one message a second each, at least)');

# the streams catch up
pump($CATCH_UP, sub {
    for my $s (@streams) {
        return 0 if grep { !$s->{seen_count}{$_} } keys %created;
    }
    return 1;
});

for my $s (@streams) {
    $s->{x}->abort if $s->{x};
    $s->{sse}->close if $s->{sse};
}


# --- every send got its answer

{
    my @unanswered = grep { $_->{outcome} ne 'response' } @sends;
    is(scalar @unanswered, 0, 'every send got a response (none cut, none '
                              . 'timed out)')
        or diag(join "\n", map { "$_->{content}: $_->{outcome} ($_->{error})" }
                           few(@unanswered));

    my @not201 = grep { $_->{outcome} eq 'response' && $_->{status} != 201 }
                 @sends;
    is(scalar @not201, 0, 'every response is a 201')
        or diag(join "\n", map { "$_->{content}: $_->{status} $_->{body}" }
                           few(@not201));

    my $retried = sum0 map { $_->{retries} } @sends;
    my $stream_retried = sum0 map { $_->{retried} } @streams;
    diag("refused or closed before the request was written, sent again: "
         . "$retried sends, $stream_retried stream connections");
}


# --- stored exactly once

my @stored;
{
    my ($skip, $total, @pages) = (0, undef);
    while (!defined $total || $skip < $total) {
        my ($s, $page) = api(GET => "/api/messages/$rid?limit=100&skip=$skip",
                             $tokens[0]);
        last unless $s == 200;
        $total = $page->{total_count};
        unshift @pages, $page->{messages};    # pages go back in time
        $skip += 100;
        last unless @{ $page->{messages} };
    }
    @stored = grep { $_->{content} ne "$tag seed" } map { @$_ } @pages;
    ok(defined $total, "the room's messages read back ("
                       . scalar(@stored) . ')');
}

{
    my %count;
    $count{ $_->{content} }++ for @stored;
    my %stored_id = map { $_->{content} => $_->{id} } @stored;
    my %sent = map { $_->{content} => $_ } @sends;

    my @lost = grep { !$count{ $_->{content} } } @created;
    is(scalar @lost, 0, 'every 201 message is stored')
        or diag(join ', ', map { $_->{content} } few(@lost));

    my @twice = grep { $count{$_} > 1 } sort keys %count;
    is(scalar @twice, 0, 'nothing is stored twice')
        or diag(join ', ', few(@twice));

    is(scalar(grep { $count{ $_->{content} }
                     && $stored_id{ $_->{content} } ne $_->{id} } @created),
       0, 'each stored as the id its 201 named');

    my @unknown = grep { !$sent{$_} } sort keys %count;
    is(scalar @unknown, 0, 'nothing stored that was not sent')
        or diag(join ', ', few(@unknown));

    my @without = grep { ($_->{status} // 0) != 201 } map { $sent{$_} // () }
                  sort keys %count;
    is(scalar @without, 0, 'nothing stored without its 201')
        or diag(join "\n", map { "$_->{content}: $_->{outcome} "
                                 . ($_->{status} // '') } few(@without));

    # each sender waited for an answer before its next message
    my %last;
    my $disorder = 0;
    for my $m (@stored) {
        my $s = $sent{ $m->{content} } or next;
        $disorder++ if ($last{ $s->{sender} } // 0) > $s->{i};
        $last{ $s->{sender} } = $s->{i};
    }
    is($disorder, 0, "the room's order keeps each sender's order");
}


# --- what the streams saw

my @order = map { $_->{id} } grep { $created{ $_->{id} } } @stored;
my %position;
@position{ map { $_->{id} } @stored } = 1 .. @stored;

# a stream's view around its first duplicate: what it saw (with each
# message's place in the room), where its connections ended
sub seen_around {
    my ($s) = @_;
    my $seen = $s->{seen};
    my %count;
    my ($at) = grep { ++$count{ $seen->[$_] } > 1 } 0 .. $#$seen;
    return "stream $s->{n}: no duplicate" unless defined $at;
    my ($first) = grep { $seen->[$_] eq $seen->[$at] } 0 .. $#$seen;
    my %end = map { $_->{after} => 1 } @{ $s->{ended} };
    my @lines;
    for my $i (($first > 3 ? $first - 3 : 0) .. ($at + 1 > $#$seen ? $#$seen : $at + 1)) {
        push @lines, '--- connection ended, resumed after the last id'
            if $end{$i};
        my $id = $seen->[$i];
        push @lines, sprintf('%s (#%s in the room)%s',
                             $content_of{$id} // $id, $position{$id} // '?',
                             $i == $first || $i == $at ? ' <-' : '');
    }
    return "stream $s->{n}:\n  " . join("\n  ", @lines);
}

{
    my (@dup, @missed, @disordered, @unsorted, @unclean, @unended,
        @failed);

    for my $s (@streams) {
        my $n = $s->{n};
        push @dup, $n if grep { $_ > 1 } values %{ $s->{seen_count} };
        push @missed, $n if grep { !$s->{seen_count}{$_} } keys %created;
        my @mine = grep { $created{$_} } @{ $s->{seen} };
        push @disordered, $n if "@mine" ne "@order" && !grep { $_ == $n } @dup, @missed;
        my %last;
        for my $m (map { $created{$_} } @mine) {
            push @unsorted, $n if ($last{ $m->{sender} } // 0) > $m->{i};
            $last{ $m->{sender} } = $m->{i};
        }
        push @unclean, $n if grep { !$_->{chunk} } @{ $s->{ended} };
        push @unended, $n if @{ $s->{ended} } < @RELOAD_AT;
        push @failed, @{ $s->{failed} };
    }

    is(scalar @failed, 0, 'every stream (re)connection was answered 200')
        or diag(join "\n", few(@failed));
    is("@dup", '', 'no stream saw a message twice')
        or diag(join "\n", map { seen_around($streams[$_ - 1]) }
                           grep { defined } @dup[0, 1]);
    is("@missed", '', 'every stream saw every 201 message')
        or diag(join "\n", map {
                    my $s = $streams[$_ - 1];
                    my @not = grep { !$s->{seen_count}{$_} }
                              sort { $position{$a} <=> $position{$b} }
                              keys %created;
                    "stream $_ missed " . @not . ', e.g. '
                    . $created{ $not[0] }{content}
                } few(@missed));
    @unsorted = do { my %u; grep { !$u{$_}++ } @unsorted };
    is("@unsorted", '', "... each sender's in the order they were sent");

    # a resumed stream replays in the room's order (GET /api/messages):
    # live frames must come in that order too, or "the rest after the
    # last id seen" is not what the client missed
    is("@disordered", '', "... all in the room's order")
        or diag(join "\n", map {
                    my $s = $streams[$_ - 1];
                    my @mine = grep { $created{$_} } @{ $s->{seen} };
                    my $i = 0;
                    $i++ while $i < @order && $mine[$i] eq $order[$i];
                    "stream $_: from the room's message #" . ($i + 1)
                    . " on, it saw "
                    . join(', ', map { $content_of{$_} // $_ }
                                 grep { defined } @mine[$i .. $i + 2])
                    . '; stored: ' . join(', ', map { $created{$_}{content} }
                                 grep { defined } @order[$i .. $i + 2])
                } grep { defined } @disordered[0 .. 2]);
    is("@unended", '', 'every reload ended every stream');
    is("@unclean", '', 'every stream ended with the last chunk (0\r\n\r\n)')
        or diag(join "\n", map {
                    my $s = $_;
                    "stream $s->{n}: " . join(', ', map {
                        $_->{chunk} ? 'chunk' : 'closed' . ($_->{error} ? " ($_->{error})" : '')
                    } @{ $s->{ended} })
                } grep { my $n = $_->{n}; grep { $_ == $n } @unclean } @streams);

    my $ends = sum0 map { scalar @{ $_->{ended} } } @streams;
    my $opens = sum0 map { $_->{opened} } @streams;
    diag("streams: $opens connections, $ends of them ended by the server");
}


# --- the old workers

{
    my %old = map { $_ => 1 } @old_workers;
    my @left;
    for (1 .. 50) {
        @left = grep { $old{$_} } $ngx->worker_pids;
        last unless @left;
        sleep 0.1;
    }
    is("@left", '', 'the old workers exited');
}

my $errors = $ngx->read_error_log($log_from);
my @alerts = grep { /\[alert\]/ } split /\n/, $errors;
is(scalar @alerts, 0, 'no [alert] in the error log')
    or diag(join "\n", few(@alerts));
unlike($errors, qr/exited on signal/, 'no worker crashed');

my $opens = sum0 map { $_->{opened} } @streams;

stop_nginx($ngx);

{
    my $log = substr($ngx->read_access_log, $access_from);
    # 200, or 499 for those the client closed, as the last ones here
    my $lines = () = $log =~ m{"GET /api/messages/stream/$rid HTTP/1\.1" (?:200|499) }g;
    is($lines, $opens, "an access-log line for every stream ($opens)");
}

done_testing();
