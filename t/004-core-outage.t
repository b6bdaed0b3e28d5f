# Nothing blocks the event loop: with one worker, a slow statement and a
# frozen datastore (SIGSTOP) leave /health fast; the requests that need the
# frozen server get a JSON 503 within their timeout; after SIGCONT the same
# worker serves them again without a restart.

use strict;
use warnings;

use Test::More;
use Test::Nginx::Chat;
use ChatStack;
use POSIX ();
use Time::HiRes qw(time sleep);

my $ngx = start_nginx_with(
    workers     => 1,
    master      => 1,
    main_config => chat_main_config(),
    http_config => chat_http_config(mysql_timeout => '1s',
                                    redis_timeout => '1s'),
    config      => 'location /diag/ { chat_diagnostics; }'
                 . ' location = /health { chat_health; }',
);

# a request in a child process; the result comes back through a pipe
sub start_request {
    my ($path) = @_;
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork() // die "fork: $!";

    if ($pid == 0) {
        close $r;
        my $res = http_request(GET => $ngx->url($path), {}, undef, 15);
        print {$w} json_encode({ status => $res->{status} // 0,
                                 body => $res->{body} // '',
                                 elapsed => $res->{elapsed} });
        close $w;
        POSIX::_exit(0);
    }

    close $w;
    return { fh => $r, pid => $pid };
}

sub finish_request {
    my ($job) = @_;
    local $/;
    my $fh = $job->{fh};
    my $out = <$fh>;
    waitpid($job->{pid}, 0);
    return json_decode($out) // { status => 0, body => '', elapsed => 0 };
}

# /health answers quickly, again and again, while something else waits
sub health_stays_fast {
    my ($seconds, $name) = @_;
    my ($n, $bad, $slowest) = (0, 0, 0);
    my $until = time() + $seconds;

    while (time() < $until) {
        my $res = http_request(GET => $ngx->url('/health'), {}, undef, 2);
        $n++;
        $bad++ if ($res->{status} // 0) != 200;
        $slowest = $res->{elapsed} if $res->{elapsed} > $slowest;
        sleep 0.05;
    }

    ok($n >= 5 && $bad == 0, "$name: /health answered $n times, $bad bad");
    cmp_ok($slowest, '<', 0.25, "$name: slowest /health took $slowest s");
}

sub eventually_ok {
    my ($path, $name) = @_;
    my $until = time() + 15;
    my $res;

    while (time() < $until) {
        $res = http_request(GET => $ngx->url($path), {}, undef, 5);
        last if ($res->{status} // 0) == 200;
        sleep 0.2;
    }

    is($res->{status}, 200, "$name: serves") or diag($res->{body});
}

for my $p ('/diag/mysql?value=1', '/diag/redis?value=1',
           '/diag/mongo?value=1')
{
    eventually_ok($p, "warm-up $p");
}

{
    my $job = start_request('/diag/mysql/sleep?seconds=2');
    sleep 0.2;
    health_stays_fast(1.5, 'slow statement');
    my $res = finish_request($job);
    is($res->{status}, 503, 'a 2 s statement with a 1 s timeout is a 503');
    eventually_ok('/diag/mysql?value=2', 'after the slow statement');
}

# server, path, its timeout in seconds
my @cases = (
    [ mariadb => '/diag/mysql?value=frozen', 1 ],
    [ redis   => '/diag/redis?value=frozen', 1 ],
    [ mongo   => '/diag/mongo?value=frozen', 3 ],
);

for my $case (@cases) {
    my ($server, $path, $timeout) = @$case;

    freeze($server);

    my $job = start_request($path);
    sleep 0.1;
    health_stays_fast($timeout + 0.5, "$server frozen");
    my $res = finish_request($job);

    thaw($server);

    is($res->{status}, 503, "$server frozen: 503");
    like($res->{body}, qr/^\{"error":"database_error"/,
         "$server frozen: JSON body");
    cmp_ok($res->{elapsed}, '<', $timeout + 1.5,
           "$server frozen: answered in $res->{elapsed} s");

    eventually_ok($path, "$server after SIGCONT");
}

stop_nginx($ngx);

done_testing();
