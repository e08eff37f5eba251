// Every message of the page must be the next seq after this user's position, and
// next_after its last seq: the contract's order guarantee, checked on every read.
// One regular-expression pass over the body, no JSON parse: this runs per sample.
// Also saved with the sample: `returned`, the messages on the page (a read is a bounded
// unit of work: at most read_limit), and `served_by`, the server the target names in
// X-Served-By or X-Instance, when it does.
vars.put('returned', '')
String headers = prev.getResponseHeaders()
def servedBy = headers =~ /(?im)^X-Served-By:[ \t]*(\S+)/
def instance = headers =~ /(?im)^X-Instance:[ \t]*(\S+)/
vars.put('served_by', servedBy.find() ? servedBy.group(1) : instance.find() ? instance.group(1) : '')
if (prev.getResponseCode() != '200') return
String body = prev.getResponseDataAsString()
long after = vars.get('after') as long
long expected = after + 1
def seqs = body =~ /"seq":\s*(\d+)/
while (seqs.find()) {
  long seq = seqs.group(1) as long
  if (seq != expected) {
    AssertionResult.setFailure(true)
    AssertionResult.setFailureMessage("seq " + seq + " where " + expected + " was due (after=" + after + ")")
    return
  }
  expected++
}
def next = body =~ /"next_after":\s*(\d+)/
if (!next.find() || (next.group(1) as long) != expected - 1) {
  AssertionResult.setFailure(true)
  AssertionResult.setFailureMessage("next_after is not the last seq " + (expected - 1) + " of the page")
  return
}
vars.put('returned', String.valueOf(expected - 1 - after))
vars.put('after', String.valueOf(expected - 1))
vars.put('after_' + vars.get('room'), String.valueOf(expected - 1))
