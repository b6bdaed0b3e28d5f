# A login storm: overload is answered, not queued.
#
# 40 clients log in (POST /api/auth/login/json, a real bcrypt hash behind
# it) again and again for 20 s; each gives up after 2 s, closes its
# connection and starts over, as users and load balancers do.  Four more
# clients join after a second and give up after 0.25 s: with the queue
# full their requests are still waiting for bcrypt when they leave, so
# cancellation is certain to be exercised (the 2 s clients rarely wait
# that long once waiting is bounded to 1 s).  bcrypt runs in a small
# thread pool, far below that rate, so:
#
#   - a request whose client left is not worked on: queued bcrypt work is
#     skipped ("cancelled"), its access-log line says 499;
#   - a login that cannot start within chat_cpu_queue_timeout (1 s by
#     default, well below the clients' 2 s) gets a fast JSON 503 with
#     Retry-After ("rejected"); every other answer is a 200;
#   - chat_cpu_tasks_total{outcome="done"|"cancelled"|"rejected"} account
#     for every attempt;
#   - logins keep succeeding during the storm, and right after it a new
#     login is answered at once;
#   - meanwhile /health and an authenticated read (GET /api/profile/me),
#     which need no bcrypt, stay fast: p99 under 50 ms.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use Test::Nginx::Chat::Exchange qw(http_call wait_any);
use ChatStack;
use List::Util qw(max);
use POSIX qw(ceil);
use Time::HiRes qw(time sleep);

my $CLIENTS = 40;
my $CLIENT_TIMEOUT = 2;      # s, then the client closes and starts again
my $IMPATIENT = 4;           # clients that give up early
my $IMPATIENT_TIMEOUT = 0.25;   # s
my $IMPATIENT_FROM = 1;      # s into the storm, when the queue is full
my $STORM = 20;              # s
my $PAUSE_AFTER_503 = 0.1;   # s, see below
my $QUEUE_TIMEOUT = 1;       # s, chat_cpu_queue_timeout's default
my $PROBE_EVERY = 0.05;      # s
my $PROBE_P99 = 0.05;        # s
my $SETTLE = 1.5;            # s after the last attempt ended

plan skip_all => 'timings under valgrind say nothing about the server'
    if Test::Nginx::Chat::Process::valgrind_enabled();

my $config = <<'EOF';
location /api/auth { chat_user; }
location /api/profile { chat_user; }
location = /health { chat_health; }
location = /metrics { chat_metrics; }
EOF

my $ngx = start_nginx_with(port => file_port(0), workers => 2, master => 1,
                           log_level => 'info',
                           main_config => chat_main_config(),
                           http_config => chat_http_config(),
                           config => $config);

$ChatStack::Base = $ngx->url('');

my $user = register_user();
my $token = login_user($user);
my $login_body = json_encode({ email => $user->{email},
                               password => $user->{password} });

sub login_exchange {
    my ($timeout) = @_;
    return Test::Nginx::Chat::Exchange->new(
        method => 'POST', url => $ngx->url('/api/auth/login/json'),
        headers => { 'Content-Type' => 'application/json' },
        body => $login_body, timeout => $timeout);
}

# the first few of a list, for diagnostics
sub few { return @_[0 .. ($#_ < 4 ? $#_ : 4)] }

my $log_from = $ngx->error_log_size;
my $access_from = length $ngx->read_access_log;
my $before = read_metrics($ngx->url('/metrics'));
ok($before, 'metrics before the storm');


# --- the prober: its own process, so the storm's loop cannot delay it

my $storm_start = time();
my $storm_end = $storm_start + $STORM;

my $prober = fork_job(sub {
    # the prober measures the server: ahead of the busy bcrypt threads in
    # the run queue, its own wake-ups add no milliseconds of their own
    setpriority(0, 0, -5);

    my %lat = (health => [], profile => []);
    my %bad = (health => 0, profile => 0);
    my @bad;

    while (time() < $storm_end) {
        my $next = time() + $PROBE_EVERY;

        for my $probe (['health', '/health', {}],
                       ['profile', '/api/profile/me',
                        { Authorization => "Bearer $token" }])
        {
            my ($name, $path, $headers) = @$probe;
            my $r = http_call(url => $ngx->url($path), headers => $headers,
                              timeout => 2);
            if ($r->{outcome} eq 'response' && $r->{status} == 200) {
                push @{ $lat{$name} }, $r->{elapsed};
            } else {
                $bad{$name}++;
                push @bad, "$name: $r->{outcome} " . ($r->{status} // '')
                    if @bad < 5;
            }
        }

        my $left = $next - time();
        sleep $left if $left > 0;
    }

    return { latency => \%lat, bad => \%bad, examples => \@bad };
});


# --- the storm: one select loop drives all the clients
#
# A client that got a 503 waits 0.1 s before its next attempt (ignoring
# Retry-After, as a storm does): the clients then offer at most 440
# logins/s, a hundred times what bcrypt can do here, while a tight loop
# of fast 503s would only spend the two cores on this test's own client.

my @attempts;
my @clients = (
    (map { { timeout => $CLIENT_TIMEOUT, next => 0 } } 1 .. $CLIENTS),
    (map { { timeout => $IMPATIENT_TIMEOUT, impatient => 1,
             next => $storm_start + $IMPATIENT_FROM } } 1 .. $IMPATIENT),
);

while (1) {
    my $now = time();

    for my $c (@clients) {
        next if $c->{x} || $now >= $storm_end || $now < $c->{next};
        $c->{x} = login_exchange($c->{timeout});
    }

    my @waiting = grep { $_->{x} } @clients;
    last if !@waiting && $now >= $storm_end;

    wait_any(0.05, map { $_->{x} } @waiting);

    for my $c (@waiting) {
        next unless $c->{x}->done;
        my $r = delete($c->{x})->result;
        $r->{impatient} = $c->{impatient};
        push @attempts, $r;
        $c->{next} = time() + (($r->{status} // 0) == 503 ? $PAUSE_AFTER_503 : 0);
    }
}

my $probes = job_result($prober) // {};

# what the clients saw
my @timeouts = grep { $_->{outcome} eq 'timeout' } @attempts;
my @answers = grep { $_->{outcome} eq 'response' } @attempts;
my @broken = grep { $_->{outcome} ne 'timeout' && $_->{outcome} ne 'response' }
             @attempts;
my @ok = grep { $_->{status} == 200 } @answers;
my @refused = grep { $_->{status} == 503 } @answers;
my @other = grep { $_->{status} != 200 && $_->{status} != 503 } @answers;
my ($n, $n200, $n503, $nto) =
    (scalar @attempts, scalar @ok, scalar @refused, scalar @timeouts);
my $nto_impatient = grep { $_->{impatient} } @timeouts;

diag("storm: $n attempts, $n200 answered 200, $n503 answered 503, "
     . "$nto timed out ($nto_impatient of them after 0.25 s), "
     . @broken . " broken, " . @other . " other");

cmp_ok(scalar(grep { !$_->{impatient} } @attempts), '>=',
       0.9 * $CLIENTS * $STORM / $CLIENT_TIMEOUT,
       'the storm ran (an attempt per client per 2 s or more)');
cmp_ok($n503 + $nto, '>=', 0.2 * $n,
       'it overloaded bcrypt (a fifth of the attempts or more refused '
       . 'or given up)');

is(scalar @broken, 0, 'every attempt got an answer or timed out')
    or diag(join "\n", map { "$_->{outcome}: $_->{error}" } few(@broken));
is(scalar @other, 0, 'every answer is a 200 or a 503')
    or diag(join "\n", map { "$_->{status}: $_->{body}" } few(@other));

is(scalar(grep { !(json_decode($_->{body}) // {})->{access_token} } @ok), 0,
   'every 200 carries a token');
is(scalar(grep { ref(json_decode($_->{body})) ne 'HASH' } @refused), 0,
   'every 503 is JSON');
is(scalar(grep { ($_->{headers}{'retry-after'} // '') !~ /^[1-9]\d*$/ }
            @refused),
   0, 'every 503 has Retry-After (seconds)');
if (@refused) {
    my $slowest = max map { $_->{elapsed} } @refused;
    cmp_ok($slowest, '<', $QUEUE_TIMEOUT + 0.5,
           sprintf('503s are fast: the slowest took %.3f s', $slowest));
}

# without admission control every hash is worked on, long after its client
# left, and the logins answered in time dwindle to nothing
cmp_ok($n200, '>=', 2 * $STORM,
       'logins keep succeeding during the storm (2/s or more)');


# --- the server's account

sleep $SETTLE;
my $after = read_metrics($ngx->url('/metrics'));
ok($after, 'metrics after the storm');

my %delta;
for my $outcome (qw(done cancelled rejected)) {
    my $was = metric_sum($before, 'chat_cpu_tasks_total', outcome => $outcome);
    my $is = metric_sum($after, 'chat_cpu_tasks_total', outcome => $outcome);
    ok(defined $is, "chat_cpu_tasks_total{outcome=\"$outcome\"} is exported");
    $delta{$outcome} = ($is // 0) - ($was // 0);
}
diag("cpu tasks during the storm: done $delta{done}, cancelled "
     . "$delta{cancelled}, rejected $delta{rejected}");

# Race margin.  The counters and the clients' records disagree only about
# an attempt whose client gave up just while its fate was decided:
#   - a hash cannot be stopped half-way: a client that leaves while its
#     bcrypt runs, or just as it finishes, is counted as done (the reply is
#     dropped), not as cancelled;
#   - a client that leaves before its request reached the CPU queue (while
#     its user row is read, a few ms) is counted nowhere.
# With the 1 s queue limit a hash that starts ends well before 2 s, so
# for the 2 s clients either takes a timeout at the very edge of its
# task's start or end: a few at most.  The 0.25 s clients meet a full
# queue (a second of work in it when its length is not bounded lower), so
# their hashes rarely start before they leave, and a user row takes
# milliseconds.  Allowed: 3, plus a tenth of the timeouts.
my $margin = 3 + ceil(0.1 * $nto);

cmp_ok($delta{done}, '>=', $n200, 'done: at least one per 200');
cmp_ok($delta{done}, '<=', $n200 + $margin,
       "done: the 200s, within the race margin ($margin)");

my $left_or_refused = $delta{cancelled} + $delta{rejected};
cmp_ok($left_or_refused, '>=', $nto + $n503 - $margin,
       'cancelled + rejected cover the clients that left and the 503s');
cmp_ok($left_or_refused, '<=', $nto + $n503,
       '... and nothing else');
cmp_ok($delta{rejected}, '>=', $n503, 'rejected: at least one per 503');
cmp_ok($delta{cancelled}, '>', 0,
       'cancelled: requests that left while queued were not worked on');

my $queue = metric_sum($after, 'chat_cpu_queue_length');
is($queue, 0, 'chat_cpu_queue_length: nothing left waiting');
ok(defined metric_sum($after, 'chat_cpu_queue_wait_seconds'),
   'chat_cpu_queue_wait_seconds is exported');

# the access log: a client that left is a 499 (same margin: a reply that
# was on its way when the client left is logged as sent)
{
    my $log = substr($ngx->read_access_log, $access_from);
    my $n499 = () = $log =~ m{"POST /api/auth/login/json HTTP/1\.1" 499 }g;
    cmp_ok($n499, '<=', $nto, "499s in the access log ($n499): no more than "
                              . "the clients that left");
    cmp_ok($n499, '>=', $nto - $margin, '... and all of them but the margin');
}


# --- right after the storm

{
    my $r = http_call(method => 'POST',
                      url => $ngx->url('/api/auth/login/json'),
                      headers => { 'Content-Type' => 'application/json' },
                      body => $login_body, timeout => $CLIENT_TIMEOUT);
    is($r->{status}, 200, "a new login right after the storm: 200 "
                          . "($r->{outcome} in " . sprintf('%.3f', $r->{elapsed})
                          . ' s)');
}


# --- the prober's view

sub p99 {
    my @s = sort { $a <=> $b } @{ $_[0] // [] };
    return undef unless @s;
    return $s[ceil(0.99 * @s) - 1];
}

for my $name (qw(health profile)) {
    my $lat = $probes->{latency}{$name} // [];
    my $count = @$lat;
    cmp_ok($count, '>=', 0.5 * $STORM / (2 * $PROBE_EVERY),
           "$name probed throughout the storm ($count times)");
    is($probes->{bad}{$name} // -1, 0, "$name: every probe answered 200")
        or diag(join "\n", @{ $probes->{examples} // [] });
    my $p99 = p99($lat) // 99;
    cmp_ok($p99, '<', $PROBE_P99,
           sprintf("$name: p99 %.1f ms (max %.1f ms)", 1000 * $p99,
                   1000 * (max(@$lat) // 0)));
}

unlike($ngx->read_error_log($log_from), qr/exited on signal/,
       'no worker crashed');

stop_nginx($ngx);

done_testing();
